"""The closed-form Euler map: exact on projected states, general everywhere else."""

from pathlib import Path

import pytest
import torch

from neuroeq import TorchEngine
from neuroeq.engines.fast_step import EulerMap
from neuroeq.expressions import parse_expression, restrict_to_interval
from tests.conftest import make_problem


@pytest.mark.parametrize("code, expected", [
    ("clip(s, 0, 1)", "s"),
    ("int(s >= 0 and s <= 1)", "1"),
    ("int(0 <= s)*clip(s, -1, 2)", "s"),
    ("int(s > 0 and s < 1)", "int_((s > 0) & (s < 1))"),  # open interval: not on the ends
    ("clip(s, 0.2, 1)", "clip(s, 0.2, 1)"),                # narrower than the bounds
    ("int(s > 2)", "0"),
    ("tanh(s)*int(w >= 0)", "tanh(s)*int_(w >= 0)"),      # other variables untouched
])
def test_restriction_to_the_bounds_is_exact(code, expected):
    found = restrict_to_interval(parse_expression(code, "test"), "s", 0.0, 1.0)
    assert str(found) == expected


def _general_step(network, x, y, beta, dt, state):
    """``Π(s + dt·(F(s) - (β/τ)c(s)))`` through the model's velocity (no simplification)."""
    with torch.no_grad():
        velocity = network.velocity(state, network.drive(x))
        if beta:
            velocity = velocity - beta / network.tau * network.cost_gradient(state, y)
        return network.project(state + dt * velocity)


def _alternating_steps(step, network, x, y, beta, dt, state, steps=30):
    """``steps`` map steps writing into two buffers in turn (as the engine does), and the
    same steps through :func:`_general_step`: ``(map's state, general state)``."""
    expected, spare = state.clone(), torch.empty_like(state)
    with torch.no_grad():
        for _ in range(steps):
            new = step(state, spare)
            spare, state = state, new
            expected = _general_step(network, x, y, beta, dt, expected)
    return state, expected


def _random_biases(network, seed=7):
    """Biases of both signs (the networks' default is 0, which hides a bias left out)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bias in network.biases.values():
            bias.copy_(0.3 * torch.randn(bias.shape, generator=generator, dtype=bias.dtype))


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_projected_map_follows_the_general_dynamics(beta):
    network, (x, y) = make_problem("hopfield", batch=5)
    _random_biases(network)
    dt = 0.5 * network.tau
    step = EulerMap(network, dt, network.drive(x), nudge=beta / network.tau, y=y)
    assert step.projected is not None  # the hard sigmoid simplifies on [0, 1]
    state = torch.rand(5, network.state_size, dtype=network.dtype) * 3 - 1  # outside too
    state, expected = _alternating_steps(step, network, x, y, beta, dt, state)
    assert float((state - expected).abs().max()) <= 1e-12


def test_a_modified_output_takes_the_general_path():
    """An output written to after the step may leave the bounds: it is not trusted."""
    network, (x, y) = make_problem("hopfield", batch=3)
    dt = 0.5 * network.tau
    step = EulerMap(network, dt, network.drive(x))
    with torch.no_grad():
        out = step(torch.rand(3, network.state_size, dtype=network.dtype))
        out[:, :4] = 2.5  # out of bounds: there ρ'(s) = 0, not 1
        found = step(out)
        expected = _general_step(network, x, y, 0.0, dt, out.clone())
    assert float((found - expected).abs().max()) <= 1e-12


def test_engine_relaxation_matches_the_autograd_path():
    """The engine's fast map (no autograd) and its generic path (under autograd) agree."""
    network, (x, y) = make_problem("hopfield", batch=4)
    engine = TorchEngine(tol=0.0, max_steps=40)
    with torch.no_grad():
        fast = engine.relax(network, x, y=y, beta=0.3)
    with torch.enable_grad():
        generic = engine.relax(network, x, y=y, beta=0.3)
    assert float((fast.state - generic.state.detach()).abs().max()) <= 1e-12


@pytest.mark.parametrize("inside", [True, False])
def test_a_start_inside_the_bounds_takes_the_bounded_forms_from_the_first_step(inside,
                                                                              monkeypatch):
    """``relax`` marks an initial state that lies in the bounds, so its first step uses
    the on-the-bounds forms; one outside them takes the general map. Both follow the
    general dynamics."""
    network, (x, y) = make_problem("hopfield", batch=5)
    generator = torch.Generator().manual_seed(2)
    init = torch.rand(5, network.state_size, generator=generator, dtype=network.dtype)
    if not inside:
        init = init * 3 - 1
    assert network.within_bounds(init) == inside
    engine = TorchEngine(tol=0.0, max_steps=1)
    dt = engine.settings(network)[0]
    calls = []
    original = EulerMap.__call__

    def spy(self, state, out=None, *, in_bounds=False):
        calls.append(self._last_output is not None and self._last_output[0] is state)
        return original(self, state, out, in_bounds=in_bounds)

    monkeypatch.setattr(EulerMap, "__call__", spy)  # records, then runs the real step
    with torch.no_grad():
        found = engine.relax(network, x, y=y, beta=0.4, init=init).state
    monkeypatch.undo()
    assert calls == [inside]
    expected = _general_step(network, x, y, 0.4, dt, init.clone())
    assert float((found - expected).abs().max()) <= 1e-12
    nan = init.clone()
    nan[0, 0] = float("nan")
    assert not network.within_bounds(nan)


def test_the_bounds_check_is_one_reduction_that_sees_every_unit():
    """Hopfield's layers share their bounds and lie side by side: one span covers the
    state, and a unit out of its box anywhere in it (or NaN) fails the check."""
    network, _ = make_problem("hopfield", batch=3)
    assert network.bounded_spans == [(0, network.state_size, (0.0, 1.0))]
    inside = torch.full((3, network.state_size), 0.5, dtype=network.dtype)
    assert network.within_bounds(inside)
    for block in network.blocks:
        for index in (block.start, block.stop - 1):
            for value in (1.0 + 1e-9, -1e-9, float("nan")):
                state = inside.clone()
                state[2, index] = value
                assert not network.within_bounds(state), (block, index, value)


@pytest.mark.parametrize("initial, inside", [(None, True), (0.5, True), (1.5, False)])
def test_the_initial_state_is_judged_from_the_model_values(initial, inside, tmp_path,
                                                           monkeypatch):
    """Without ``init`` the relaxation starts from the model's initial values, judged
    inside or outside the bounds from the numbers: inside, the first step takes the
    on-the-bounds forms; outside, the general map. Both follow the general dynamics."""
    model = (Path(__file__).parents[2] / "models" / "hopfield.toml").read_text()
    if initial is not None:
        model += f"\n[initial]\ns = {initial}\n"
    path = tmp_path / "hopfield_start.toml"
    path.write_text(model)
    network, (x, y) = make_problem(str(path), batch=4)
    assert network.initial_within_bounds() == inside
    assert network.within_bounds(network.initial_state(4)) == inside
    engine = TorchEngine(tol=0.0, max_steps=1)
    calls = []
    original = EulerMap.__call__

    def spy(self, state, out=None, *, in_bounds=False):
        calls.append(self._last_output is not None and self._last_output[0] is state)
        return original(self, state, out, in_bounds=in_bounds)

    monkeypatch.setattr(EulerMap, "__call__", spy)
    with torch.no_grad():
        found = engine.relax(network, x, y=y, beta=0.4).state
    monkeypatch.undo()
    assert calls == [inside]
    expected = _general_step(network, x, y, 0.4, engine.settings(network)[0],
                             network.initial_state(4))
    assert float((found - expected).abs().max()) <= 1e-12


@pytest.mark.parametrize("model, sweep", [  # the oscillator's extra channels: no sweep
    ("fhn", False), ("fhn", True), ("hopfield_smooth", False), ("hopfield_smooth", True),
    ("spiking_rate", False), ("spiking_rate", True), ("oscillator", False)])
@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_general_map_follows_the_model_equations(model, sweep, beta):
    """Models without simplifying bounds take the general updates, with ρ and ρ' evaluated
    together (their shared terms once): 30 steps equal the model's velocity, Jacobi, and
    the layer sweep equals the same update applied layer by layer."""
    network, (x, y) = make_problem(model, (7, 6, 5, 3), batch=4)
    _random_biases(network)
    dt = TorchEngine().settings(network)[0]
    drive = network.drive(x)
    step = EulerMap(network, dt, drive, nudge=beta / network.tau, y=y, sweep=sweep)
    generator = torch.Generator().manual_seed(4)
    state = network.initial_state(4) + 0.3 * torch.randn(4, network.state_size,
                                                         generator=generator,
                                                         dtype=network.dtype)
    expected = state.clone()
    with torch.no_grad():
        for _ in range(30):
            state = step(state)
            if not sweep:
                expected = _general_step(network, x, y, beta, dt, expected)
                continue
            for layer in range(1, network.n_layers + 1):  # each layer from the newest state
                new = _general_step(network, x, y, beta, dt, expected)
                for block in (b for b in network.blocks if b.layer == layer):
                    expected[:, block.start:block.stop] = new[:, block.start:block.stop]
    assert float((state - expected).abs().max()) <= 1e-12
    assert float((state - network.initial_state(4)).abs().max()) > 1e-3  # it moved


def test_rates_and_slopes_together_equal_each_alone():
    """``rho_and_prime`` (one expression set, common terms shared) equals ``rho`` and
    ``rho_prime`` evaluated separately, for every bundled model."""
    generator = torch.Generator().manual_seed(6)
    for model in ("fhn", "hopfield", "hopfield_smooth", "spiking_rate", "oscillator", "linear"):
        network, _ = make_problem(model, (3, 5, 2))
        compiled = network.compiled
        s = 2 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
        rates, slopes = compiled.rho_and_prime(s)
        torch.testing.assert_close(rates, compiled.rho(s), rtol=0, atol=1e-15)
        torch.testing.assert_close(slopes, compiled.rho_prime(s), rtol=0, atol=1e-15)


@pytest.mark.parametrize("model", ["hopfield", "fhn"])
def test_a_phase_started_from_an_earlier_result_shares_its_map(model, monkeypatch):
    """``relax(start=free)``: the free phase's state (copied, not modified), its input
    currents and its map's constant parts; the same nudged states as ``init=``/``drive=``.
    The free state, the map's own unmodified output, needs no bounds reduction; once
    written to, it does."""
    from neuroeq.errors import ConfigError

    network, (x, y) = make_problem(model, batch=6)
    engine = TorchEngine(tol=0.0, max_steps=20)
    checks = []
    original = type(network).within_bounds
    monkeypatch.setattr(type(network), "within_bounds",
                        lambda self, state: checks.append(1) or original(self, state))
    with torch.no_grad():
        free = engine.relax(network, x)
        kept = free.state.clone()
        shared = engine.relax(network, x, y=y, beta=0.4, start=free, max_steps=5)
        assert checks == []
        rebuilt = engine.relax(network, x, y=y, beta=0.4, init=free.state, drive=free.drive,
                               max_steps=5)
    assert shared.euler_map.base is free.euler_map.base
    assert rebuilt.euler_map.base is not free.euler_map.base
    torch.testing.assert_close(shared.state, rebuilt.state, rtol=0, atol=0)
    torch.testing.assert_close(free.state, kept, rtol=0, atol=0)
    assert len(checks) == (1 if network.compiled.bounds else 0)  # init= is checked
    if network.compiled.bounds:
        with torch.no_grad():
            free.state.mul_(1.0)  # written to: no longer known to lie in the bounds
            engine.relax(network, x, y=y, beta=0.4, start=free, max_steps=5)
        assert len(checks) == 2
    with pytest.raises(ConfigError, match="do not pass init= or drive= with it"):
        engine.relax(network, x, y=y, beta=0.4, start=free, init=free.state)


def _tensors_in(value: object, depth: int = 3) -> list[torch.Tensor]:
    """The tensors held by ``value`` through dicts, lists and tuples (``depth`` levels)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if depth == 0:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item, depth - 1)]
    return []


@pytest.mark.parametrize("model", ["hopfield", "fhn"])
def test_a_result_keeps_its_map_without_the_dead_spare_state(model):
    """The map a result keeps (for a later phase) holds no state-sized buffer but the
    result's own state: the relaxation's spare buffer is released with it."""
    network, (x, _) = make_problem(model, batch=6)
    with torch.no_grad():
        free = TorchEngine(tol=0.0, max_steps=7).relax(network, x)
    held = [t for t in _tensors_in(vars(free.euler_map)) if t.shape == free.state.shape]
    if network.compiled.bounds:  # it keeps its last output, to know it lies in the bounds
        assert held
    for tensor in held:
        assert tensor.untyped_storage().data_ptr() == free.state.untyped_storage().data_ptr()


@pytest.mark.parametrize("model, skip", [("hopfield", False), ("hopfield", True),
                                         ("fhn", False)])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_the_narrow_readout_product_follows_the_model_equations(model, skip, beta):
    """A readout of 2 units from 40 takes the transposed product into a kept buffer, with
    the views of the step buffers, of the rates and of its offset made once: the offset a
    bias (no input edge) or, with skip connections, the input's current too. 30 steps
    alternating between two buffers equal the general step, and a nudged map made from
    this one (its caches dropped) does too."""
    network, (x, y) = make_problem(model, (20, 40, 2), batch=8, skip=skip)
    dt = TorchEngine().settings(network)[0]
    step = EulerMap(network, dt, network.drive(x))
    assert (2, 1) in step._narrow_edges
    generator = torch.Generator().manual_seed(5)
    start = torch.rand(8, network.state_size, generator=generator, dtype=network.dtype)
    for current in (step, step.with_nudge(beta / network.tau, y)):
        state, expected = _alternating_steps(current, network, x, y,
                                             current.nudge * network.tau, dt, start.clone())
        assert float((state - expected).abs().max()) <= 1e-12
        assert float((state - start).abs().max()) > 1e-3  # it moved
