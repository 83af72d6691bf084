"""Oscillator (OIM) networks: two coupling channels (cos, sin) give the Kuramoto coupling,
and centered EP matches the true gradient."""

import math

import pytest
import torch

from neuroeq import Network
from neuroeq.errors import ModelError
from neuroeq.neuron_model import load_model, model_from_dict
from neuroeq.rules import CenteredEP, ImplicitDifferentiation
from tests.conftest import cosine, make_problem


def test_dynamics_are_the_oim_phase_equations():
    network = Network("oscillator", (4, 5, 3), seed=3)
    x = torch.rand(2, 4, dtype=torch.float64)
    phi = torch.rand(2, network.state_size, dtype=torch.float64) * 2 * math.pi
    W1, W2 = network.weights["W1"].detach(), network.weights["W2"].detach()
    n1 = network.sizes[1]
    J = torch.zeros(network.state_size, network.state_size, dtype=torch.float64)
    J[n1:, :n1], J[:n1, n1:] = W2, W2.T  # symmetric coupling between the free layers
    h = torch.cat([network.biases["b1"], network.biases["b2"]]).detach()
    h = h + torch.cat([x @ W1.T, torch.zeros(2, 3, dtype=torch.float64)], dim=-1)  # input field
    S = network.model.parameters["S"]
    expected = (-(J * torch.sin(phi.unsqueeze(-1) - phi.unsqueeze(-2))).sum(-1)
                - h * torch.sin(phi) - S * torch.sin(2 * phi)) / network.tau
    torch.testing.assert_close(network.velocity(phi, network.drive(x)), expected)


def test_energy_is_the_oim_lyapunov_function():
    network = Network("oscillator", (4, 5, 3), seed=3)
    x = torch.rand(2, 4, dtype=torch.float64)
    phi = (torch.rand(2, network.state_size, dtype=torch.float64) * 6).requires_grad_()
    (grad,) = torch.autograd.grad(network.energy(phi, x).sum(), phi)
    torch.testing.assert_close(network.velocity(phi.detach(), network.drive(x)),
                               -grad / network.tau)


@pytest.mark.parametrize("seed", [0, 1])
def test_centered_ep_matches_true_gradient(seed):
    from neuroeq import TorchEngine

    engine = TorchEngine(tol=1e-11, max_steps=100_000)
    network, batch = make_problem("oscillator", (8, 6, 3), seed=seed)
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False).flat(names)
    found = CenteredEP(1e-3, engine).estimate(network, batch, free=free,
                                              write_grad=False).flat(names)
    assert cosine(found, true) > 0.9999


def test_channel_errors_name_the_key():
    data = {"name": "osc", "structural_class": "general", "coupled_variable": "p",
            "time_constant": "tau", "equations": "dp/dt = (I_syn + I_syn_sin)/tau : 1",
            "rho": "cos(p)", "rho_prime": "-sin(p)",
            "parameters": {"tau": {"value": 1.0, "unit": "ms"}}}
    with pytest.raises(ModelError, match="undefined name"):
        model_from_dict(data)
    with pytest.raises(ModelError, match=r"channels.sin\] needs exactly"):
        model_from_dict({**data, "channels": {"sin": {"rho": "sin(p)"}}})
    with pytest.raises(ModelError, match="may depend only on"):
        model_from_dict({**data, "channels": {"sin": {"rho": "sin(q)", "rho_prime": "1"}}})
    model = model_from_dict({**data, "channels": {"sin": {"rho": "sin(p)",
                                                          "rho_prime": "cos(p)"}}})
    assert model.channels == {"sin": ("sin(p)", "cos(p)")}
    assert load_model("oscillator").channels["sin"] == ("sin(phi)", "cos(phi)")
