"""The torch mean-field engine: convergence, per-sample steps, failures named clearly."""

import pytest
import torch

from neuroeq import ConfigError, Network, RelaxationError, TorchEngine
from neuroeq.neuron_model import load_model, model_from_dict
from tests.conftest import make_problem


@pytest.mark.parametrize("model", ["hopfield", "hopfield_smooth", "fhn", "spiking_rate"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relaxation_reaches_a_stationary_state(model, dtype):
    network, (x, _) = make_problem(model, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    with torch.no_grad():
        result = TorchEngine(tol=tol, max_steps=50_000).relax(network, x)
    assert result.state.dtype == dtype
    assert bool(result.converged.all())
    assert (result.steps > 0).all() and (result.steps <= result.n_steps).all()
    velocity = network.velocity(result.state, network.drive(x))
    if not network.compiled.bounds:
        assert float(velocity.abs().max()) * network.tau < 10 * tol


def test_nudge_moves_the_output_toward_the_target():
    network, (x, y) = make_problem("hopfield_smooth")
    engine = TorchEngine(tol=1e-10)
    with torch.no_grad():
        free = engine.relax(network, x)
        nudged = engine.relax(network, x, y=y, beta=0.5, init=free.state)
    assert float(network.cost(nudged.state, y).mean()) < float(network.cost(free.state, y).mean())


def test_nudged_phase_needs_targets():
    network, (x, _) = make_problem("hopfield_smooth")
    with pytest.raises(ConfigError, match="targets"):
        TorchEngine().relax(network, x, beta=0.1)


@pytest.mark.parametrize("beta", ["0.5", float("nan"), float("inf"), True, None])
def test_a_nudge_that_is_not_a_finite_number_is_named(beta):
    network, (x, y) = make_problem("hopfield")
    with pytest.raises(ConfigError, match=r"beta must be a finite number, got"):
        TorchEngine(max_steps=5, tol=0.0).relax(network, x, y=y, beta=beta)
    state = TorchEngine(max_steps=5, tol=0.0).relax(network, x, y=y,
                                                    beta=torch.tensor(0.5)).state
    expected = TorchEngine(max_steps=5, tol=0.0).relax(network, x, y=y, beta=0.5).state
    torch.testing.assert_close(state, expected, rtol=0, atol=0)


def test_a_slow_steady_approach_is_not_called_a_limit_cycle():
    # a globally stable linear net at a tiny dt: the residual falls at every check, by less
    # than half per quarter of the checks (it was reported as "oscillating")
    network = Network("linear", (3, 4, 2), seed=0)
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    engine = TorchEngine(dt=2e-6, tol=1e-8, max_steps=400, record_trace=True,
                         on_failure="ignore")
    with torch.no_grad():
        result = engine.relax(network, x)
    assert all(b < a for a, b in zip(result.trace, result.trace[1:], strict=False))
    assert result.failure.kind == "not_converged"
    assert "still converging" in str(result.failure)


def test_fhn_limit_cycle_is_reported_as_oscillation():
    textbook = load_model("fhn").with_parameters(b=0.8, eps=0.08)
    network = Network(textbook, (4, 6, 3), seed=0, gain=3.0)
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-8, max_steps=6_000).relax(network, x)
    assert info.value.kind == "oscillating"
    assert info.value.layer.split(".")[0] in network.layer_names
    assert info.value.samples
    assert "did not settle" in str(info.value) and "oscillating" in str(info.value)


def test_budget_exhausted_is_reported_as_not_converged():
    network, (x, _) = make_problem("fhn")
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-12, max_steps=40).relax(network, x)
    assert info.value.kind == "not_converged"
    # 40 steps checked every 10: too few checks to tell a slow approach from a limit cycle
    assert "only 4 convergence checks, too few to tell" in str(info.value)
    assert "raise max_steps or lower check_every" in str(info.value)
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-12, max_steps=200, check_every=5).relax(network, x)
    assert info.value.kind == "not_converged"
    assert "still converging: raise max_steps" in str(info.value)


def test_divergence_names_the_layer():
    unstable = model_from_dict({
        "name": "unstable", "structural_class": "general", "coupled_variable": "u",
        "time_constant": "tau", "equations": "du/dt = (u + I_syn + bias)/tau : 1",
        "rho": "u", "rho_prime": "1 + 0*u", "parameters": {"tau": {"value": 1, "unit": "ms"}},
    })
    network = Network(unstable, (3, 4, 2))
    # on_failure covers a phase that does not settle; a diverged one has no state to return
    for on_failure in ("raise", "warn", "ignore"):
        with pytest.raises(RelaxationError) as info, torch.no_grad():
            TorchEngine(tol=1e-8, max_steps=10_000, dt=1e-4, on_failure=on_failure).relax(
                network, torch.ones(2, 3))
        assert info.value.kind in ("diverged", "nan")
        assert info.value.layer.startswith(("hidden1", "output"))


def test_a_fixed_budget_still_checks_for_divergence_and_reports_the_last_residual():
    """With ``tol = 0`` the intermediate checks skip the residual but not the divergence
    test (the unstable net is caught long before the end of its budget), and the residual
    reported is the last step's ``max|Δs|·τ/dt``."""
    unstable = model_from_dict({
        "name": "unstable", "structural_class": "general", "coupled_variable": "u",
        "time_constant": "tau", "equations": "du/dt = (u + I_syn + bias)/tau : 1",
        "rho": "u", "rho_prime": "1 + 0*u", "parameters": {"tau": {"value": 1, "unit": "ms"}},
    })
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=0.0, max_steps=10**9, dt=1e-3, divergence=1e3).relax(
            Network(unstable, (3, 4, 2)), torch.ones(2, 3))
    assert info.value.kind == "diverged"
    network, (x, _) = make_problem("fhn")
    engine = TorchEngine(tol=0.0, max_steps=25)
    with torch.no_grad():
        before = TorchEngine(tol=0.0, max_steps=24).relax(network, x).state
        result = engine.relax(network, x)
    dt, _, _ = engine.settings(network)
    expected = (result.state - before).abs().amax(-1) * (network.tau / dt)
    torch.testing.assert_close(result.residual, expected, rtol=1e-9, atol=1e-15)
    assert result.n_steps == 25 and result.failure is None


def test_on_failure_warn_returns_the_state():
    network, (x, _) = make_problem("fhn")
    with pytest.warns(RuntimeWarning, match="did not settle"), torch.no_grad():
        result = TorchEngine(tol=1e-12, max_steps=40, on_failure="warn").relax(network, x)
    assert result.failure is not None and not bool(result.converged.all())


@pytest.mark.parametrize("options, message", [
    ({"dt": -1e-4}, "dt must be a positive number of seconds, got -0.0001"),
    ({"dt": "0.1"}, "dt must be a positive number of seconds, got '0.1'"),
    ({"max_steps": 2.5}, "max_steps must be a whole number of at least 1, got 2.5"),
    ({"max_steps": "10"}, "max_steps must be a whole number of at least 1, got '10'"),
    ({"max_steps": True}, "max_steps must be a whole number of at least 1, got True"),
    ({"tol": float("nan")}, "tol must be a non-negative number, got nan"),
    ({"check_every": 2.5}, "check_every must be a whole number of at least 1"),
    ({"divergence": float("nan")}, "divergence must be a positive number, got nan"),
    ({"divergence": 0}, "divergence must be a positive number, got 0"),
    ({"stability_iterations": -1}, "stability_iterations must be a whole number of at least 0"),
])
def test_bad_engine_settings_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        TorchEngine(**options)


def test_a_phase_budget_and_tolerance_are_checked_like_the_engine_settings():
    network = Network("hopfield_smooth", (3, 4, 2))
    x = torch.rand(2, 3, dtype=torch.float64)
    engine = TorchEngine()
    for options, message in (({"max_steps": 0}, "max_steps must be a whole number of at least 1"),
                             ({"tol": -1.0}, "tol must be a non-negative number, got -1.0")):
        with pytest.raises(ConfigError, match=message):
            engine.relax(network, x, **options)
    assert TorchEngine(max_steps=10.0).relax(network, x, tol=0.0).n_steps == 10


def test_wrong_input_width_is_refused():
    network, _ = make_problem("hopfield_smooth")
    with pytest.raises(ConfigError, match="features"):
        TorchEngine().relax(network, torch.zeros(2, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    network, (x, _) = make_problem("fhn")
    engine = TorchEngine(tol=1e-10)
    with torch.no_grad():
        cpu = engine.relax(network, x).state
        network.to("cuda")
        gpu = engine.relax(network, x.cuda()).state.cpu()
    torch.testing.assert_close(cpu, gpu)


@pytest.mark.parametrize(("value", "kind"), [(float("nan"), "nan"), (float("-inf"), "nan"),
                                             (-1e9, "diverged")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_check_finite_names_the_bad_samples_and_layer(value, kind, dtype):
    from neuroeq.engines.failures import check_finite

    network = Network("hopfield", (3, 4, 2), dtype=torch.float64)
    state = torch.zeros(5, network.state_size, dtype=dtype)
    check_finite(network, state, 7, 1e6, network.layer_of_index)  # a good state passes
    state[3, network.output_block.start] = value
    with pytest.raises(RelaxationError) as info:
        check_finite(network, state, 7, 1e6, network.layer_of_index)
    assert info.value.kind == kind
    assert info.value.samples == [3]
    assert info.value.layer.startswith("output")


def test_a_sample_that_settled_and_moved_on_counts_as_unsettled_again():
    """Convergence describes the returned state: a sample below tol at one check and above
    it at a later one (near a saddle, while the batch runs on for the others) is unsettled
    until it settles again, and its step is the check from which it stayed below."""
    from neuroeq.engines.failures import ConvergenceLog

    log = ConvergenceLog((2,), torch.float64)
    assert not log.record(torch.tensor([0.5e-6, 1.0], dtype=torch.float64), 10, 1e-6)
    assert log.converged.tolist() == [True, False] and log.steps.tolist() == [10, -1]
    assert not log.record(torch.tensor([2e-6, 0.5e-6], dtype=torch.float64), 20, 1e-6)
    assert log.converged.tolist() == [False, True] and log.steps.tolist() == [-1, 20]
    assert log.record(torch.tensor([1e-7, 1e-7], dtype=torch.float64), 30, 1e-6)
    assert log.steps.tolist() == [30, 20]
