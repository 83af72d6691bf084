"""The closed-form Euler map and the Anderson solver: same states, same fixed points, and
failures still detected."""

import re

import pytest
import torch

from neuroeq import Network, RelaxationError, TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.neuron_model import load_model, model_from_dict
from tests.conftest import make_problem

MODELS = ["hopfield", "hopfield_smooth", "fhn", "spiking_rate"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric"])
def test_closed_form_map_matches_the_autograd_path(model, coupling):
    """Under ``no_grad`` the engine runs the folded closed-form map; with autograd the
    generic ``s + dt·F(s)``: the same trajectory step by step (nudge included)."""
    network, (x, y) = make_problem(model, (12, 9, 7, 4), coupling, lateral=True, skip=True)
    engine = TorchEngine(tol=0.0, max_steps=60)
    with torch.no_grad():
        fast = engine.relax(network, x, y=y, beta=0.3).state
    with torch.enable_grad():
        generic = engine.relax(network, x, y=y, beta=0.3).state.detach()
    torch.testing.assert_close(fast, generic, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model, dt_fraction, beta", [
    ("hopfield", 0.25, 0.3), ("fhn", 0.25, 0.3),
    # at dt = τ the readout's update has no a·v term: its addmm result lands in the output
    # through the nudge's or the projection's kernel
    ("hopfield", 1.0, 0.3), ("hopfield", 1.0, 0.0), ("hopfield", 0.25, 0.0)])
@pytest.mark.parametrize("sweep", [False, True])
def test_narrow_readout_products_follow_the_same_trajectory(model, dt_fraction, beta, sweep,
                                                            monkeypatch):
    """A readout edge with few outputs and many inputs (80 → 4) is computed as ``(M ρᵀ)ᵀ``
    into a kept buffer, on the lean affine path (Hopfield) and the general one (FHN): the
    trajectory equals the autograd path's and the ``addmm`` form's, and the form is taken."""
    from neuroeq.engines import fast_step

    network, (x, y) = make_problem(model, (10, 80, 4), "asymmetric", batch=16)
    with torch.no_grad():
        for name, value in network.dynamics_parameters().items():
            if name.startswith("b"):  # non-zero biases: the readout's joins its product
                value.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(3))
        drive = network.drive(x)
        state = network.initial_state(16)
        maps = {}
        for label, outputs in (("narrow", fast_step.NARROW_OUTPUTS), ("addmm", 0)):
            monkeypatch.setattr(fast_step, "NARROW_OUTPUTS", outputs)
            euler_map = fast_step.EulerMap(network, network.tau * dt_fraction, drive,
                                           nudge=beta / network.tau, y=y,
                                           sweep=sweep)
            s = state
            for _ in range(30):
                s = euler_map(s)
            maps[label] = (euler_map, s)
    assert maps["narrow"][0]._narrow_products and not maps["addmm"][0]._narrow_products
    torch.testing.assert_close(maps["narrow"][1], maps["addmm"][1], rtol=0, atol=1e-12)
    if not sweep:
        engine = TorchEngine(dt=network.tau * dt_fraction, tol=0.0, max_steps=30)
        with torch.enable_grad():
            generic = engine.relax(network, x, y=y, beta=beta).state.detach()
        torch.testing.assert_close(maps["narrow"][1], generic, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model, dt_fraction", [("hopfield", 1.0), ("hopfield", 0.25),
                                               ("fhn", 0.25)])
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric"])
def test_both_matrix_layouts_follow_the_same_trajectory(model, dt_fraction, coupling,
                                                        monkeypatch):
    """A wide edge's ``Mᵀ`` is kept contiguous (a plain product) below
    ``PLAIN_PRODUCT_BYTES`` and used through the transpose of a contiguous ``M`` above:
    both layouts give the autograd path's trajectory, forward and feedback edges alike."""
    from neuroeq.engines import fast_step

    network, (x, y) = make_problem(model, (10, 24, 20, 4), coupling, batch=8)
    engine = TorchEngine(dt=network.tau * dt_fraction, tol=0.0, max_steps=30)
    with torch.enable_grad():
        generic = engine.relax(network, x, y=y, beta=0.3).state.detach()
    for limit, contiguous in ((fast_step.PLAIN_PRODUCT_BYTES, True), (0, False)):
        monkeypatch.setattr(fast_step, "PLAIN_PRODUCT_BYTES", limit)
        with torch.no_grad():
            euler_map = fast_step.EulerMap(network, engine.dt, network.drive(x))
            fast = engine.relax(network, x, y=y, beta=0.3).state
        wide = [t for edges in euler_map.incoming.values() for _, t in edges
                if t.shape[-1] > fast_step.NARROW_OUTPUTS]
        assert wide and all(t.is_contiguous() == contiguous for t in wide)
        torch.testing.assert_close(fast, generic, rtol=0, atol=1e-12)


def test_closed_form_map_applies_the_extra_force():
    network, (x, _) = make_problem("fhn")
    engine = TorchEngine(tol=0.0, max_steps=30)

    def force(s):
        return 0.1 * torch.sin(s)

    with torch.no_grad():
        fast = engine.relax(network, x, force=force).state
    with torch.enable_grad():
        generic = engine.relax(network, x, force=force).state.detach()
    torch.testing.assert_close(fast, generic, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric", "feedforward"])
def test_anderson_reaches_the_euler_fixed_point(model, coupling):
    network, (x, _) = make_problem(model, (20, 16, 16, 5), coupling)
    with torch.no_grad():
        euler = TorchEngine(tol=1e-11, max_steps=50_000).relax(network, x)
        anderson = TorchEngine(tol=1e-11, max_steps=50_000, solver="anderson").relax(network, x)
    assert bool(anderson.converged.all())
    assert (anderson.steps > 0).all()
    torch.testing.assert_close(anderson.state, euler.state, rtol=0, atol=1e-8)
    with torch.no_grad():
        velocity = network.velocity(anderson.state, network.drive(x))
    if not network.compiled.bounds:
        assert float(velocity.abs().max()) * network.tau < 1e-9


@pytest.mark.parametrize("model", ["hopfield", "fhn"])
@pytest.mark.parametrize("mixing", [0.5, 1.5, 2.0])
def test_anderson_with_mixing_reaches_the_euler_fixed_point(model, mixing):
    """The mixing ``ω`` changes the iterates (``s + ωf`` is extrapolated), not the fixed
    point."""
    network, (x, _) = make_problem(model, (20, 16, 16, 5), "symmetric")
    with torch.no_grad():
        euler = TorchEngine(tol=1e-11, max_steps=50_000).relax(network, x)
        plain = TorchEngine(tol=1e-11, max_steps=50_000, solver="anderson").relax(network, x)
        mixed = TorchEngine(tol=1e-11, max_steps=50_000, solver="anderson",
                            anderson_mixing=mixing).relax(network, x)
    assert bool(mixed.converged.all())
    torch.testing.assert_close(mixed.state, euler.state, rtol=0, atol=1e-8)
    assert not torch.equal(mixed.steps, plain.steps) or \
        not torch.equal(mixed.state, plain.state)


def test_anderson_needs_fewer_map_evaluations_on_a_slow_network():
    network, (x, _) = make_problem("hopfield_smooth", (30, 24, 24, 6), gain=1.5)
    with torch.no_grad():
        euler = TorchEngine(tol=1e-9, max_steps=50_000).relax(network, x)
        anderson = TorchEngine(tol=1e-9, max_steps=50_000, solver="anderson").relax(network, x)
    assert anderson.n_steps < euler.n_steps / 2


def test_anderson_works_in_float32():
    network, (x, _) = make_problem("fhn", dtype=torch.float32)
    with torch.no_grad():
        euler = TorchEngine(tol=1e-5, max_steps=50_000).relax(network, x)
        anderson = TorchEngine(tol=1e-5, max_steps=50_000, solver="anderson").relax(network, x)
    assert anderson.state.dtype == torch.float32
    torch.testing.assert_close(anderson.state, euler.state, rtol=0, atol=1e-4)


def _limit_cycle_network():
    textbook = load_model("fhn").with_parameters(b=0.8, eps=0.08)
    network = Network(textbook, (4, 6, 3), seed=0, gain=3.0)
    return network, torch.full((3, 4), 0.5, dtype=torch.float64)


def test_anderson_still_reports_a_limit_cycle():
    """Anderson may converge to the unstable fixed point inside the cycle; the stability
    check sees it, the dynamics take over and the oscillation is reported."""
    network, x = _limit_cycle_network()
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-8, max_steps=6_000, solver="anderson").relax(network, x)
    assert info.value.kind in ("oscillating", "unstable")
    assert info.value.samples


def test_anderson_reports_an_unstable_fixed_point_when_no_budget_is_left():
    network, x = _limit_cycle_network()
    engine = TorchEngine(tol=1e-8, max_steps=2000, solver="anderson", on_failure="warn")
    with pytest.warns(RuntimeWarning), torch.no_grad():
        result = engine.relax(network, x)
    assert result.failure is not None
    assert result.failure.kind in ("unstable", "oscillating", "not_converged")


def test_anderson_stability_check_passes_stable_fixed_points():
    network, (x, _) = make_problem("fhn", (20, 16, 5))
    with torch.no_grad():
        result = TorchEngine(tol=1e-10, max_steps=50_000, solver="anderson").relax(network, x)
    assert result.failure is None and bool(result.converged.all())


@pytest.mark.parametrize("memory", [3, 10])
def test_anderson_falls_back_to_the_dynamics_where_an_extrapolation_blows_up(memory):
    """On dense inputs some of Anderson's extrapolations land where FHN's cubic term makes
    the next map evaluation NaN, although Euler settles every sample (these six did so for
    m = 3, 5 and 10 before the fallback). Such a sample goes back to its best iterate and
    follows the plain dynamics: every sample settles at Euler's fixed point."""
    network = Network("fhn", (784, 256, 10), seed=0, dtype=torch.float64)
    x = torch.rand(128, 784, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)[[7, 31, 50, 107, 111, 113]]
    with torch.no_grad():
        euler = TorchEngine(tol=1e-9, max_steps=20_000).relax(network, x)
        anderson = TorchEngine(tol=1e-9, max_steps=20_000, solver="anderson",
                               anderson_memory=memory).relax(network, x)
    assert anderson.failure is None and bool(anderson.converged.all())
    torch.testing.assert_close(anderson.state, euler.state, rtol=0, atol=1e-7)


@pytest.mark.parametrize("equation", ["du/dt = (u + I_syn + bias)/tau : 1",
                                      "du/dt = (u**3 + 1 + I_syn + bias)/tau : 1",
                                      "du/dt = (u**2 + 1 + I_syn)/tau : 1",
                                      "du/dt = 1e12*(1 + I_syn)/tau : 1"])
def test_anderson_still_reports_dynamics_that_diverge(equation):
    """The fallback follows the dynamics: where they blow up, Anderson reports it within a
    few checks, as Euler does, instead of retrying until the budget is spent (the last
    model's very first step leaves the bounds: there is no earlier iterate to go back to)."""
    model = model_from_dict({
        "name": "unstable", "structural_class": "general", "coupled_variable": "u",
        "time_constant": "tau", "equations": equation, "rho": "u", "rho_prime": "1 + 0*u",
        "parameters": {"tau": {"value": 1, "unit": "ms"}}})
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-8, max_steps=10_000, dt=1e-2, solver="anderson").relax(
            Network(model, (3, 4, 2)), torch.ones(2, 3))
    assert info.value.kind in ("diverged", "nan")
    assert int(re.search(r"after (\d+) steps", str(info.value)).group(1)) <= 50


def test_anderson_reports_an_exhausted_budget():
    network, (x, _) = make_problem("fhn")
    with pytest.raises(RelaxationError) as info, torch.no_grad():
        TorchEngine(tol=1e-14, max_steps=5, solver="anderson").relax(network, x)
    assert info.value.kind in ("not_converged", "oscillating")


@pytest.mark.parametrize("solver", ["euler", "anderson", "gauss_seidel"])
def test_an_exhausted_budget_reports_max_steps_evaluations(solver, map_evaluations):
    """A tolerance out of reach in 7 steps: every solver reports 7 steps, the map
    evaluations it ran (Gauss-Seidel's sweeps and the Euler check that judges them; it
    reported 8, one sweep per step of the budget and then the check)."""
    network, (x, _) = make_problem("fhn", (6, 5, 3), batch=2)
    calls = map_evaluations
    engine = TorchEngine(tol=1e-14, max_steps=7, check_every=1, solver=solver,
                         on_failure="ignore", record_trace=True)
    with torch.no_grad():
        result = engine.relax(network, x)
    assert result.failure is not None and "after 7 steps" in str(result.failure)
    assert result.n_steps == 7 == calls["sweep"] + calls["euler"]
    assert result.steps.tolist() == [-1, -1] and not bool(result.converged.any())
    assert len(result.trace) == (6 if solver == "gauss_seidel" else 7)


def _exact_residual(network, x, state):
    """``max|G(s) - s|·τ/dt`` of ``state`` at the engine's Euler map ``G``."""
    from neuroeq.engines import fast_step

    dt = TorchEngine().settings(network)[0]
    euler_map = fast_step.EulerMap(network, dt, network.drive(x))
    return (euler_map(state) - state).abs().amax(-1) * network.tau / dt


def test_anderson_reports_the_residual_of_the_state_it_returns():
    """On a limit cycle Anderson's budget ends unsettled: the residual reported is the
    returned state's own (it was that of the iterate before, and the state a further
    extrapolation: 0.069 reported for 0.143), and the samples are reported unsettled."""
    textbook = load_model("fhn").with_parameters(b=0.8, eps=0.08)
    network = Network(textbook, (4, 6, 3), seed=0, gain=6.0)
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    with torch.no_grad():
        fixed = TorchEngine(tol=0.0, max_steps=500, solver="anderson").relax(network, x)
        short = TorchEngine(tol=1e-8, max_steps=300, solver="anderson",
                            on_failure="ignore").relax(network, x)
    for result in (fixed, short):
        exact = _exact_residual(network, x, result.state)
        torch.testing.assert_close(result.residual, exact, rtol=1e-9, atol=0.0)
        assert bool((result.residual > 1e-3).all())
        assert result.steps.tolist() == [-1, -1, -1] and not bool(result.converged.any())
    assert short.failure is not None and short.failure.samples == [0, 1, 2]
    # a settled sample is frozen at the iterate its residual is of
    stable, (stable_x, _) = make_problem("fhn", (20, 16, 5))
    with torch.no_grad():
        settled = TorchEngine(tol=1e-10, max_steps=50_000, solver="anderson").relax(stable,
                                                                                    stable_x)
    assert settled.failure is None and bool(settled.converged.all())
    torch.testing.assert_close(settled.residual, _exact_residual(stable, stable_x,
                                                                 settled.state),
                               rtol=1e-6, atol=1e-15)
    assert bool((settled.residual < 1e-10).all())


def test_anderson_at_an_exact_fixed_point_reports_a_zero_residual_not_minus_zero():
    """With a fixed budget Anderson lands exactly on FHN's fixed point (G(s) = s to the
    last bit): its residual is +0.0 (it was -0.0, from max(-min f, max f))."""
    network = Network("fhn", (4, 6, 3), seed=0)
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    with torch.no_grad():
        result = TorchEngine(tol=0.0, max_steps=500, solver="anderson").relax(network, x)
    exact = _exact_residual(network, x, result.state)
    assert result.residual.tolist() == exact.tolist() == [0.0, 0.0, 0.0]
    assert not bool(torch.signbit(result.residual).any())


def test_bad_solver_settings_are_refused():
    with pytest.raises(ConfigError, match="solver"):
        TorchEngine(solver="newton")
    with pytest.raises(ConfigError, match="anderson_memory"):
        TorchEngine(solver="anderson", anderson_memory=0)
    for mixing in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="anderson_mixing"):
            TorchEngine(solver="anderson", anderson_mixing=mixing)


def test_anderson_history_keeps_its_gram_matrix_and_right_hand_side_exact():
    """The incrementally updated ``Γ = ΔFᴴΔF`` and ``r = ΔFᴴf`` equal the direct products
    through wrap-around of the ring buffer and a restart of some samples."""
    from neuroeq.engines.torch_engine import _AndersonHistory

    generator = torch.Generator().manual_seed(0)
    n, memory, width = 4, 3, 7
    history = _AndersonHistory(n, memory, width, torch.zeros(1, dtype=torch.float64))
    f_prev = torch.randn(n, width, generator=generator, dtype=torch.float64)
    g_prev = torch.randn(n, width, generator=generator, dtype=torch.float64)
    for k in range(8):
        f = torch.randn(n, width, generator=generator, dtype=torch.float64)
        g = torch.randn(n, width, generator=generator, dtype=torch.float64)
        history.add(f, f_prev, g, g_prev)
        if k == 4:
            history.forget(torch.tensor([False, True, False, True]))
        valid = history.delta_f[:, :history.count]  # zero for the restarted samples
        torch.testing.assert_close(history.gram[:, :history.count, :history.count],
                                   valid @ valid.transpose(-1, -2))
        torch.testing.assert_close(history.rhs[:, :history.count],
                                   (valid @ f.unsqueeze(-1)).squeeze(-1))
        f_prev, g_prev = f, g


def test_an_unstable_fixed_point_found_by_anderson_hands_over_to_the_dynamics():
    """On this net the Euler map never settles, yet Anderson (which solves ``G(s) = s``)
    converges. The stability check sees that the dynamics leave that point: with budget
    left they are followed and fail as Euler does; without, the point is reported."""
    network = Network("hopfield_smooth", (6, 8, 3), seed=0, gain=2.0)
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    budget = 3_000  # Euler is classed as oscillating from ~1,000 steps on
    settings = {"tol": 1e-9, "solver": "anderson", "on_failure": "ignore"}
    with torch.no_grad():
        euler = TorchEngine(tol=1e-9, max_steps=budget, on_failure="ignore").relax(network, x)
        blind = TorchEngine(max_steps=budget, stability_iterations=0, **settings).relax(
            network, x)
        followed = TorchEngine(max_steps=budget, **settings).relax(network, x)
        no_budget = TorchEngine(max_steps=blind.n_steps + 40, **settings).relax(network, x)
    assert euler.failure is not None and blind.failure is None
    assert followed.failure is not None and followed.failure.kind == euler.failure.kind
    assert followed.n_steps == budget
    assert no_budget.failure is not None and no_budget.failure.kind == "unstable"


def test_the_stability_check_applies_the_exact_jacobian_where_it_can(monkeypatch):
    """On a free phase of an unbounded model the check multiplies by ``I + dt·J`` in closed
    form; its verdicts, growth and evaluations equal the finite-difference check's (forced
    here) at Anderson's unstable point inside a limit cycle and at a stable point. Nudged
    and bounded maps keep the finite differences."""
    from neuroeq.engines import torch_engine
    from neuroeq.engines.fast_step import EulerMap

    engine = TorchEngine(solver="anderson")
    network, x = _limit_cycle_network()
    stable_network, (stable_x, _) = make_problem("fhn", (20, 16, 5))
    for net, inputs in ((network, x), (stable_network, stable_x)):
        with torch.no_grad():
            point = TorchEngine(tol=1e-9, max_steps=6_000, solver="anderson",
                                stability_iterations=0).relax(net, inputs).state
            step = EulerMap(net, engine.settings(net)[0], net.drive(inputs))
            assert torch_engine._euler_jacobian(step, point, point.shape, None) is not None
            exact, evaluations = engine._unstable(net, step, point, point.shape, None, str)
            with monkeypatch.context() as patch:
                patch.setattr(torch_engine, "_euler_jacobian", lambda *args: None)
                differences, fd_evaluations = engine._unstable(net, step, point, point.shape,
                                                               None, str)
        assert evaluations == fd_evaluations
        if net is stable_network:
            assert exact is None and differences is None
            continue
        failure, fd_failure = exact[0], differences[0]
        assert failure.kind == fd_failure.kind == "unstable"
        assert failure.samples == fd_failure.samples == [0, 1, 2]
        assert failure.residual == pytest.approx(fd_failure.residual, rel=1e-6)
        assert failure.residual > 1.01
    hopfield, (hx, _) = make_problem("hopfield", (6, 8, 3))
    with torch.no_grad():
        state = hopfield.project(hopfield.initial_state(3) + 0.5)
        bounded = EulerMap(hopfield, 0.5, hopfield.drive(hx))
        nudged = EulerMap(stable_network, 0.05, stable_network.drive(stable_x), nudge=1.0,
                          y=torch.zeros(len(stable_x), dtype=torch.long))
        free_state = stable_network.initial_state(len(stable_x))
    assert torch_engine._euler_jacobian(bounded, state, state.shape, hopfield.project) is None
    assert torch_engine._euler_jacobian(nudged, free_state, free_state.shape, None) is None


def _linear_step(eigenvalues: torch.Tensor, seed: int = 0):
    """``s ↦ A s`` with ``A = Q diag(eigenvalues) Q⁻¹`` (non-orthogonal eigenvectors)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    basis = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(
        n, n, generator=generator, dtype=torch.float64)
    matrix = basis @ torch.diag(eigenvalues.double()) @ torch.linalg.inv(basis)

    def step(s, out=None):
        return s @ matrix.T

    return step


@pytest.mark.parametrize("unstable_eigenvalue", [1.05, -1.05])
def test_the_stability_check_finds_one_growing_mode_among_many_decaying_ones(
        unstable_eigenvalue):
    """One eigenvalue of the map's Jacobian outside the unit circle (a real growing mode,
    or one that flips sign each step) among 47 at 0.5: reported for every sample, with the
    growth per step measured, after the full number of iterations."""
    network, _ = make_problem("hopfield", (6, 8, 3))
    eigenvalues = torch.full((48,), 0.5)
    eigenvalues[17] = unstable_eigenvalue
    engine = TorchEngine(solver="anderson", stability_iterations=40)
    point = torch.zeros(5, 48, dtype=torch.float64)
    unstable, evaluations = engine._unstable(network, _linear_step(eigenvalues), point,
                                             point.shape, None, lambda i: f"index {i}")
    assert unstable is not None and evaluations == 41
    failure, direction, mask = unstable
    assert failure.kind == "unstable" and failure.samples == [0, 1, 2, 3, 4]
    assert mask.tolist() == [True] * 5
    assert failure.residual == pytest.approx(1.05, rel=1e-3)
    assert direction.shape == point.shape and bool((direction != 0).any(-1).all())


def test_the_stability_check_stops_early_once_every_perturbation_has_shrunk():
    """All eigenvalues at most 0.5: the perturbation falls below ``δ/√D`` within about 15
    iterations (``0.5ᵏ < 1e-3/√48``), so the check stops there instead of running 40; a
    spectrum just inside the circle (0.995) is passed after the full 40 iterations."""
    network, _ = make_problem("hopfield", (6, 8, 3))
    engine = TorchEngine(solver="anderson", stability_iterations=40)
    point = torch.zeros(5, 48, dtype=torch.float64)
    spread = torch.linspace(-0.5, 0.5, 48)
    unstable, evaluations = engine._unstable(network, _linear_step(spread), point,
                                             point.shape, None, str)
    assert unstable is None and 11 <= evaluations <= 21
    unstable, evaluations = engine._unstable(network, _linear_step(torch.full((48,), 0.995)),
                                             point, point.shape, None, str)
    assert unstable is None and evaluations == 41


def test_accelerated_solvers_count_the_stability_check_in_their_evaluations():
    """``n_steps`` is the cost: the check's map evaluations (one at the point, then at most
    40 power iterations) are in it, for both accelerated solvers."""
    network, (x, _) = make_problem("hopfield", (30, 24, 24, 6), batch=8)
    for solver in ("anderson", "gauss_seidel"):
        with torch.no_grad():
            blind = TorchEngine(tol=1e-9, max_steps=50_000, solver=solver,
                                stability_iterations=0).relax(network, x)
            checked = TorchEngine(tol=1e-9, max_steps=50_000, solver=solver).relax(network, x)
        assert torch.equal(checked.state, blind.state) and checked.failure is None
        assert blind.n_steps + 2 <= checked.n_steps <= blind.n_steps + 41, solver


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_anderson_history_keeps_the_gram_matrix_and_right_hand_side(dtype):
    """After more pairs than its memory, the ring buffers' Γ = ΔFᴴΔF and r = ΔFᴴf equal
    the products recomputed from the kept differences (real and complex states)."""
    from neuroeq.engines.torch_engine import _AndersonHistory

    generator = torch.Generator().manual_seed(9)
    samples, memory, width = 3, 4, 7
    history = _AndersonHistory(samples, memory, width, torch.zeros(1, dtype=dtype))
    residuals = [torch.randn(samples, width, generator=generator, dtype=dtype)
                 for _ in range(7)]
    maps = [torch.randn(samples, width, generator=generator, dtype=dtype) for _ in range(7)]
    for k in range(1, 7):
        history.add(residuals[k], residuals[k - 1], maps[k], maps[k - 1])
    assert history.count == memory
    delta_f = history.delta_f[:, :memory]  # (samples, m, D), slots in ring order
    expected_gram = delta_f.conj() @ delta_f.transpose(-1, -2)
    expected_rhs = (delta_f.conj() * residuals[6].unsqueeze(-2)).sum(-1)
    torch.testing.assert_close(history.gram, expected_gram, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(history.rhs, expected_rhs, rtol=1e-12, atol=1e-12)
    newest = (history.slot - 1) % memory
    torch.testing.assert_close(delta_f[:, newest], residuals[6] - residuals[5])


def test_a_singular_anderson_system_gives_the_plain_step_for_that_sample_only():
    """A sample at rest leaves differences at rounding level, whose system can be singular
    to working precision (it stopped a demo run with Anderson while recording its traces):
    that sample gets no extrapolation; the others keep theirs."""
    from neuroeq.engines.torch_engine import _AndersonHistory

    history = _AndersonHistory(2, 3, 4, torch.zeros(1, dtype=torch.float64))
    generator = torch.Generator().manual_seed(3)
    f = [torch.randn(2, 4, generator=generator, dtype=torch.float64) for _ in range(3)]
    g = [torch.randn(2, 4, generator=generator, dtype=torch.float64) for _ in range(3)]
    for k in (1, 2):
        history.add(f[k], f[k - 1], g[k], g[k - 1])
    history.gram[1] = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    history.rhs[1] = torch.tensor([1.0, 1.0, 0.0])  # exactly singular: ridge·tr/m is lost
    extrapolation = history.extrapolation(0.0, torch.float64)
    assert torch.isfinite(extrapolation).all()
    assert (extrapolation[1] == 0).all() and (extrapolation[0] != 0).any()


def test_a_solver_asked_for_under_autograd_says_that_it_takes_euler_steps():
    network, (x, y) = make_problem("hopfield", (20, 16, 5), seed=0)
    engine = TorchEngine(tol=1e-8, max_steps=5_000, solver="anderson")
    with pytest.warns(RuntimeWarning, match="solver 'anderson' runs without autograd only"):
        with_graph = engine.relax(network, x)
    with torch.no_grad():
        accelerated = engine.relax(network, x)
    assert accelerated.n_steps < with_graph.n_steps
    # the BPTT oracle back-propagates through Euler's steps of the same settings, quietly
    import warnings

    from neuroeq.rules import BPTT

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        BPTT(engine).estimate(network, (x, y), write_grad=False)


def test_anderson_that_stalls_follows_the_dynamics_to_their_fixed_point():
    """A projected extrapolation that keeps returning to one point (a hard-sigmoid net of
    three hidden layers; it stayed at the start for all 20,000 iterations) is a stall: the
    sample goes back to its best iterate and follows the Euler map, as the dynamics do."""
    network = Network("hopfield", (3, 3, 3, 3, 2), coupling="symmetric", seed=2, gain=2.0)
    x = torch.rand(1, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        euler = TorchEngine(max_steps=20_000, tol=1e-9).relax(network, x)
        for memory, budget in ((5, 200), (3, 1_200)):  # a 2-cycle; a cycle of ten points
            anderson = TorchEngine(max_steps=5_000, tol=1e-9, solver="anderson",
                                   anderson_memory=memory).relax(network, x)
            assert bool(anderson.converged.all()) and anderson.n_steps < budget
            torch.testing.assert_close(anderson.state, euler.state, rtol=0, atol=1e-8)


def test_anderson_iterates_that_run_off_go_back_instead_of_reporting_divergence():
    """An oscillator's phases cannot diverge under its dynamics (dφ/dt is a sum of sines),
    but an extrapolated iterate can drift past the divergence bound: it goes back to its
    best iterate (it was reported as 'diverged' even with on_failure='ignore')."""
    network = Network("oscillator", (3, 4, 4, 2), coupling="symmetric", seed=1, lateral=True)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(5), dtype=network.dtype)
    with torch.no_grad():
        result = TorchEngine(dt=5e-4, max_steps=20_000, tol=1e-10,
                             solver="anderson").relax(network, x)
        assert bool(result.converged.all())
        velocity = network.velocity(result.state, network.drive(x))
    assert float(velocity.abs().max()) * network.tau < 1e-9


def test_samples_at_an_unstable_point_with_no_budget_left_are_reported_unsettled():
    # a saddle (linear net, gain 3): Anderson finds it in 10 iterations, the stability
    # check finds it unstable, and 40 steps leave nothing to follow the dynamics with; the
    # samples were reported converged at step 10 beside the "unstable" failure
    network = Network("linear", (4, 6, 3), coupling="symmetric", seed=0, gain=3.0)
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    engine = TorchEngine(solver="anderson", tol=1e-8, max_steps=40, on_failure="ignore")
    with torch.no_grad():
        result = engine.relax(network, x)
    assert result.failure.kind == "unstable" and result.failure.samples == [0, 1]
    assert result.converged.tolist() == [False, False] and result.steps.tolist() == [-1, -1]
    # 51 evaluations before the hand-over to the dynamics, 50 Euler steps after it
    with pytest.raises(RelaxationError, match=r"after 101 steps"), torch.no_grad():
        TorchEngine(solver="anderson", tol=1e-8, max_steps=4000).relax(network, x)


def test_gauss_seidel_is_judged_at_the_users_tolerance_when_its_budget_ends():
    # over-relaxed sweeps on FHN: the first round's Euler check fails, the next sweeps to
    # tol / 10; at 70 steps its own (tightened) criterion failed though the Euler residual
    # of every sample was below tol
    network = Network("fhn", (10, 12, 4), seed=0)
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    engine = TorchEngine(solver="gauss_seidel", over_relaxation=1.9, tol=1e-6, max_steps=70,
                         on_failure="ignore")
    with torch.no_grad():
        result = engine.relax(network, x)
        euler = TorchEngine(tol=0.0, max_steps=1)
        step = euler.relax(network, x, init=result.state).state - result.state
    residual = step.abs().amax(-1) * network.tau / euler.settings(network)[0]
    assert result.failure is None and bool(result.converged.all())
    assert float(residual.max()) < 1e-6
