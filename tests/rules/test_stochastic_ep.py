"""Stochastic EP on the Brian2 spiking engine converges to mean-field EP; seeds reproduce."""

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines.brian2_spiking import SpikingEngine
from neuroeq.errors import ConfigError
from neuroeq.rules import CenteredEP
from neuroeq.rules.stochastic_ep import StochasticEP
from tests.conftest import cosine

pytestmark = pytest.mark.brian2

BETA = 0.1


def _problem():
    # rates inside (0, 1), where the hard sigmoid is linear and the mean field is exact
    network = Network("spiking_rate", (6, 8, 3), seed=0, gain=0.5, bias_init=0.5)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=generator)
    return network, x, y


def _flat(grads, names):
    return torch.cat([grads[n].reshape(-1) for n in names])


def test_stochastic_ep_converges_to_mean_field_ep():
    network, x, y = _problem()
    names = [n for n, _ in network.named_parameters()]
    mean_field = TorchEngine(dt=5e-5, tol=1e-10, max_steps=400_000)
    reference = CenteredEP(BETA, mean_field).estimate(network, (x, y),
                                                      write_grad=False).flat(names)
    engine = SpikingEngine(target="numpy", window=2000, snapshots=(100,), replicas=4, seed=3)
    rule = StochasticEP(BETA, engine)
    estimate = rule.estimate(network, (x, y))
    longest = cosine(estimate.flat(names), reference)
    assert longest >= 0.99
    shortest = _flat(rule.combine_phases(network, x, estimate.free, estimate.nudged, 0, 1), names)
    assert float((shortest - reference).norm()) > float((estimate.flat(names) - reference).norm())
    # the free phase's mean membrane is the mean-field stationary state
    with torch.no_grad():
        free = mean_field.relax(network, x)
    assert float((estimate.free.state - free.state).abs().max()) < 0.05
    # gradients land in param.grad like every other rule
    assert torch.equal(network.weights["W1"].grad, estimate.grads["weights.W1"])


def test_seeds_make_phases_reproducible():
    network, x, y = _problem()

    def run(seed):
        engine = SpikingEngine(target="numpy", window=200, burn_in=50, replicas=2, seed=seed)
        return StochasticEP(BETA, engine).estimate(network, (x, y), write_grad=False)

    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first.flat(), again.flat())
    assert torch.equal(first.free.rates[2], again.free.rates[2])
    assert not torch.equal(first.flat(), other.flat())
    # the nudged phases share the free phase's random numbers (common random numbers)
    assert first.nudged["+beta"].seed == first.free.seed


def test_nudged_phase_needs_a_reference_state():
    from neuroeq.rules import make_rule

    assert isinstance(make_rule("stoch_ep", beta=BETA), StochasticEP)
    network, x, y = _problem()
    engine = SpikingEngine(target="numpy", window=10, burn_in=0)
    with pytest.raises(ConfigError, match="nudge_at"):
        engine.relax(network, x, y=y, beta=BETA)
    with pytest.raises(ConfigError, match="snapshots"):
        SpikingEngine(target="numpy", window=10, snapshots=(20,)).relax(network, x)
