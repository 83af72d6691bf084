"""The Gauss-Seidel layer sweep: its semantics step by step, the Euler fixed point, fewer
map evaluations on the Hopfield net, and failures still detected."""

import pytest
import torch

from neuroeq import Network, RelaxationError, TorchEngine
from neuroeq.engines import fast_step
from neuroeq.errors import ConfigError
from neuroeq.neuron_model import load_model
from tests.conftest import make_problem

MODELS = ["hopfield", "hopfield_smooth", "fhn", "spiking_rate"]


def _layer_slice(network, layer):
    blocks = [b for b in network.blocks if b.layer == layer]
    return slice(blocks[0].start, blocks[-1].stop)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("beta", [0.0, 0.4])
@pytest.mark.parametrize("in_bounds", [False, True])
@pytest.mark.parametrize("edges", ["layered", "lateral_skip"])
def test_a_sweep_updates_each_layer_from_the_new_states_before_it(model, beta, in_bounds,
                                                                  edges):
    """Layer ``l`` of a sweep equals layer ``l`` of the plain (Jacobi) Euler map applied to
    the state whose layers ``< l`` already hold their new values (skip and lateral edges
    included, the nudge on the output layer). ``in_bounds`` on a layered Hopfield net
    takes the lean all-affine step."""
    options = {"lateral": True, "skip": True} if edges == "lateral_skip" else {}
    network, (x, y) = make_problem(model, (12, 9, 7, 4), "asymmetric", **options)
    dt = 0.3 * network.tau
    drive = network.drive(x)
    nudge = beta / network.tau
    with torch.no_grad():
        state = network.project(network.initial_state(len(x)) +
                                0.3 * torch.rand(len(x), network.state_size,
                                                 generator=torch.Generator().manual_seed(3),
                                                 dtype=x.dtype))
        sweep_map = fast_step.EulerMap(network, dt, drive, nudge=nudge, y=y, sweep=True)
        sweep = sweep_map(state, in_bounds=in_bounds)
        jacobi = fast_step.EulerMap(network, dt, drive, nudge=nudge, y=y)
        hybrid = state.clone()
        for layer in range(1, network.n_layers + 1):
            block = _layer_slice(network, layer)
            hybrid[:, block] = jacobi(hybrid)[:, block]
        plain = jacobi(state)
    if model == "hopfield" and in_bounds and edges == "layered":
        assert sweep_map.lean and len(sweep_map.affine_projected) == network.n_layers
    torch.testing.assert_close(sweep, hybrid, rtol=0, atol=1e-12)
    assert not torch.allclose(sweep, plain)  # the order matters


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric", "feedforward"])
def test_gauss_seidel_reaches_the_euler_fixed_point(model, coupling):
    network, (x, y) = make_problem(model, (20, 16, 16, 5), coupling)
    with torch.no_grad():
        for beta in (0.0, 0.3):
            euler = TorchEngine(tol=1e-11, max_steps=50_000).relax(network, x, y=y, beta=beta)
            sweeps = TorchEngine(tol=1e-11, max_steps=50_000, solver="gauss_seidel",
                                 over_relaxation=1.5).relax(network, x, y=y, beta=beta)
            assert bool(sweeps.converged.all()) and sweeps.failure is None
            # the residual reported is the engine's own criterion at the Euler map
            dt = TorchEngine().settings(network)[0]
            euler_map = fast_step.EulerMap(network, dt, network.drive(x), nudge=beta /
                                           network.tau, y=y)
            own = (euler_map(sweeps.state) - sweeps.state).abs().amax(-1) * network.tau / dt
            torch.testing.assert_close(sweeps.residual, own, rtol=1e-9, atol=1e-16)
            assert (sweeps.residual < 1e-11).all()
            torch.testing.assert_close(sweeps.state, euler.state, rtol=0, atol=1e-8)


def test_gauss_seidel_needs_few_sweeps_on_the_hopfield_net():
    """At ``ω·dt = τ`` a sweep sets each layer to ``clip(I_l)`` from the new layers below."""
    network, (x, _) = make_problem("hopfield", (30, 24, 24, 6), batch=8)
    with torch.no_grad():
        euler = TorchEngine(tol=1e-9, max_steps=50_000, check_every=1).relax(network, x)
        sweeps = TorchEngine(tol=1e-9, max_steps=50_000, check_every=1, solver="gauss_seidel",
                             over_relaxation=2.0, stability_iterations=0).relax(network, x)
    assert sweeps.n_steps <= euler.n_steps / 3, (sweeps.n_steps, euler.n_steps)
    torch.testing.assert_close(sweeps.state, euler.state, rtol=0, atol=1e-8)


def test_gauss_seidel_falls_back_to_euler_with_an_extra_force():
    network, (x, _) = make_problem("fhn")

    def force(s):
        return 0.1 * torch.sin(s)

    with torch.no_grad():
        euler = TorchEngine(tol=1e-10, max_steps=20_000).relax(network, x, force=force)
        sweeps = TorchEngine(tol=1e-10, max_steps=20_000,
                             solver="gauss_seidel").relax(network, x, force=force)
    assert torch.equal(sweeps.state, euler.state) and sweeps.n_steps == euler.n_steps


def test_gauss_seidel_still_reports_a_limit_cycle():
    textbook = load_model("fhn").with_parameters(b=0.8, eps=0.08)
    network = Network(textbook, (4, 6, 3), seed=0, gain=3.0)
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-8, max_steps=6_000, solver="gauss_seidel").relax(network, x)
    assert info.value.kind in ("oscillating", "unstable", "not_converged")
    assert info.value.samples


@pytest.mark.parametrize("max_steps", [1, 2, 65])
def test_gauss_seidel_keeps_its_euler_checks_within_the_budget(max_steps, map_evaluations):
    """Every round of sweeps ends in one Euler map evaluation that judges it, and it is
    part of the budget: ``n_steps`` is the evaluations run and never above ``max_steps``
    (over-relaxed FHN: at 65 steps the first round's check fails and the second round
    runs out; 66 were run and reported, and 2 for a budget of 1)."""
    network = Network("fhn", (10, 12, 4), seed=0)
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = map_evaluations
    engine = TorchEngine(solver="gauss_seidel", over_relaxation=1.9, tol=1e-6,
                         max_steps=max_steps, on_failure="ignore", stability_iterations=0)
    with torch.no_grad():
        result = engine.relax(network, x)
    assert result.n_steps == calls["sweep"] + calls["euler"] <= max_steps
    assert calls["euler"] >= 1  # the last evaluation judges the last round
    if result.failure is not None:  # the budget is spent
        assert result.n_steps == max_steps
        assert f"after {max_steps} steps" in str(result.failure)
    assert int(result.steps.max()) <= max_steps


def test_bad_over_relaxation_is_refused():
    for value in (0.0, -2.0, float("inf")):
        with pytest.raises(ConfigError, match="over_relaxation"):
            TorchEngine(solver="gauss_seidel", over_relaxation=value)
