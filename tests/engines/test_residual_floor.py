"""The residual's floor in the torch engine: ``max|G(s) - s|·τ/dt`` cannot resolve less than
one rounding step of the state, ``eps·max|s|·τ/dt`` per sample (1.19e-6 for float32 FHN
near ``|v| = 1`` at ``τ/dt = 10``, above the model file's ``tol = 1e-6``). A sample at its
floor counts as settled (``RelaxResult.at_floor``, with a warning); float64 results are
unchanged; dynamics that do not settle are still reported."""

import warnings

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines import torch_engine
from neuroeq.engines.failures import (
    ConvergenceLog,
    floor_might_bind,
    not_settled,
    residual_floor,
)
from neuroeq.neuron_model import load_model

SOLVERS = ["euler", "anderson", "gauss_seidel"]
SIZES = (4, 6, 3)
# a budget far above the few hundred steps the phase needs (before, it ran out, "oscillating")
BUDGET = 3000


def fhn_problem(dtype: torch.dtype) -> tuple[Network, torch.Tensor]:
    """The shipped FHN model, tiny and seeded (the same inputs in either dtype); of the 128
    float32 samples a few end chattering by one rounding step of ``v`` (two or three, by
    solver, on the reference CPU: before the floor, the phase ran out of budget)."""
    network = Network("fhn", SIZES, seed=3, dtype=dtype)
    x = torch.rand(128, SIZES[0], generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64)
    return network, x.to(dtype)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_fhn_settles_at_its_residual_floor(solver):
    network, x = fhn_problem(torch.float32)
    engine = TorchEngine(max_steps=BUDGET, solver=solver)
    dt, _, tol = engine.settings(network)
    assert tol == 1e-6  # the model file's
    with pytest.warns(RuntimeWarning, match=r"tol 1e-06 is below the float32 resolution of "
                                            r"the residual.*RelaxResult\.at_floor"), \
            torch.no_grad():
        result = engine.relax(network, x)
    assert result.failure is None and bool(result.converged.all())
    assert result.n_steps < BUDGET
    at_floor = result.at_floor
    assert at_floor is not None and bool(at_floor.any())
    floor = residual_floor(result.state, network.tau / dt)
    assert bool((floor > tol).all())  # the floor is above tol here: the defect's condition
    assert bool((result.residual[at_floor] >= tol).all())
    assert bool((result.residual[at_floor] <= floor[at_floor]).all())
    assert bool((result.residual[~at_floor] < tol).all())
    # the state is the fixed point to float32 precision: that of a float64 relaxation
    network64, x64 = fhn_problem(torch.float64)
    with torch.no_grad():
        reference = TorchEngine(tol=1e-10).relax(network64, x64).state
    assert float((result.state.double() - reference).abs().max()) < 1e-5


def test_the_floor_notice_is_shown_once_for_the_same_settings():
    network, x = fhn_problem(torch.float32)
    engine = TorchEngine(max_steps=BUDGET)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("default")
        results = [engine.relax(network, x) for _ in range(3)]
    notices = [w for w in caught if "resolution of the residual" in str(w.message)]
    assert len(notices) == 1 and notices[0].category is RuntimeWarning
    assert all(r.at_floor is not None for r in results)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("tol", [None, 1e-12])
def test_float64_results_are_those_without_the_floor(solver, tol, monkeypatch):
    """In float64 the floor (~2.4e-15 here) is far below tol: computing it at every check
    or never changes nothing, bit for bit, and no sample is said to be at it."""
    network, x = fhn_problem(torch.float64)
    engine = TorchEngine(solver=solver, tol=tol)
    runs = {}
    for label, binds in (("as is", None), ("always", True), ("never", False)):
        if binds is not None:
            monkeypatch.setattr(torch_engine, "floor_might_bind", lambda *_, b=binds: b)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("error", RuntimeWarning)
            runs[label] = engine.relax(network, x)
    for label, result in runs.items():
        assert result.at_floor is None, label
        assert result.failure is None and bool(result.converged.all()), label
    expected = runs["never"]
    for label in ("as is", "always"):
        result = runs[label]
        for name in ("state", "steps", "converged", "residual"):
            torch.testing.assert_close(getattr(result, name), getattr(expected, name),
                                       rtol=0, atol=0, msg=f"{label}: {name}")
        assert result.n_steps == expected.n_steps


@pytest.mark.parametrize("solver, budget", [("euler", 6_000), ("anderson", 200),
                                            ("gauss_seidel", 6_000)])
def test_a_float32_limit_cycle_is_still_reported(solver, budget):
    """The textbook excitable FHN coupled (tests/engines/test_torch_engine.py), in float32 at
    the model's tol, where the floors are compared: a limit cycle, not rounding (Anderson's
    iterations on it are slow: a short budget)."""
    textbook = load_model("fhn").with_parameters(b=0.8, eps=0.08)
    network = Network(textbook, SIZES, seed=0, gain=3.0, dtype=torch.float32)
    x = torch.full((3, SIZES[0]), 0.5, dtype=torch.float32)
    engine = TorchEngine(max_steps=budget, solver=solver, on_failure="warn")
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        result = engine.relax(network, x)
    failure = result.failure
    assert failure is not None and failure.kind in ("oscillating", "not_converged")
    if solver != "gauss_seidel":  # (its one final check is too few to tell a trend)
        assert failure.kind == "oscillating"
        assert "a limit cycle or chatter" in str(failure)
    assert "resolution" not in str(failure)
    assert not bool(result.converged.any()) and result.at_floor is None
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert messages == [str(failure)]  # its failure, and no floor notice


def test_a_float32_slow_approach_is_still_reported():
    """The slow linear approach of tests/engines/test_torch_engine.py in float32: at
    ``τ/dt = 500`` and tol 1e-8 the floors are computed at every check, and change
    nothing (the residual, 0.2, is far above them)."""
    network = Network("linear", (3, 4, 2), seed=0, dtype=torch.float32)
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    engine = TorchEngine(dt=2e-6, tol=1e-8, max_steps=400, on_failure="ignore")
    assert floor_might_bind(1e-8, 1.0, torch.float32, network.tau / 2e-6)
    with torch.no_grad():
        result = engine.relax(network, x)
    assert result.failure.kind == "not_converged"
    assert "still converging" in str(result.failure)
    assert result.at_floor is None


def test_the_log_counts_a_residual_at_its_floor_as_settled():
    log = ConvergenceLog((3,), torch.float32)
    residual = torch.tensor([1.19e-6, 1.19e-6, 5e-7])
    floor = torch.tensor([1.2e-6, 1.1e-6, 1e-8])
    assert not log.record(residual, 10, 1e-6, floor)
    assert log.converged.tolist() == [True, False, True]
    assert log.steps.tolist() == [10, -1, 10]
    assert not ConvergenceLog((3,), torch.float32).record(residual, 10, 1e-6)  # tol alone


def test_chatter_at_the_floor_is_named_as_rounding_not_a_limit_cycle():
    """A residual that stopped falling within a few floors in every unsettled sample is
    rounding (the kind stays ``oscillating``, as in the Brian2 engine); far above them it is
    a limit cycle."""
    network = Network("fhn", SIZES, seed=1, dtype=torch.float32)
    width = network.initial_state(1).shape[-1]
    converged = torch.tensor([True, False])
    floor = torch.tensor([1.2e-6, 1.3e-6])
    for level, expected in ((2.4e-6, "rounding chatter of the state rather than a limit "
                                     "cycle; use a float64 network or tol >= 5.2e-06"),
                            (0.1, "a limit cycle or chatter")):
        residual = torch.tensor([1.19e-6, level])
        history = [residual.clone() for _ in range(12)]
        error = not_settled(network, torch.full((2, width), level / 10), residual, converged,
                            history, 120, 1e-6, network.layer_of_index, floor=floor)
        assert error.kind == "oscillating" and error.samples == [1]
        assert expected in str(error)
        assert ("float32 resolution" in str(error)) == (level < 1e-3)
