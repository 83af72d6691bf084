"""Relaxation trajectories: the free and nudged phases recorded as an ``xarray.Dataset``,
with convergence traces and phase portraits (FHN units in the ``(v, w)`` plane)."""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import whole_number
from neuroeq.engines.torch_engine import TorchEngine
from neuroeq.errors import ConfigError, short
from neuroeq.network import Network
from neuroeq.rules.phases import active_mask

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure


@torch.no_grad()
def record_relaxation(network: Network, engine: TorchEngine, x: torch.Tensor,
                      y: torch.Tensor | None = None, beta: float = 0.0, *, chunk: int = 10,
                      free_steps: int | None = None, nudged_steps: int | None = None
                      ) -> xr.Dataset:
    """Record the free phase (``s*``) and, when ``y`` and ``β`` are given, the nudged phases
    ``±β`` started from ``s*``, every ``chunk`` Euler steps and after a phase's last step
    (Euler steps of the dynamics whatever the engine's ``solver``).

    Returns variables ``state`` (phase, time, sample, unit) and ``residual``
    (phase, time, sample) ``= max_units |ds/dt|·τ`` (units pinned at a bound count as
    settled); the ``unit`` coordinate carries the
    ``layer``, ``variable`` and ``index`` of each flat state element; ``time`` (ms, from
    the start of each phase) holds every phase's recording times, and ``state`` and
    ``residual`` are NaN where a phase has no record (a budget of 8 steps in chunks of 10 is
    recorded at 0 and 8 steps).

    ``free_steps`` and ``nudged_steps``: Euler steps of each phase, whole numbers of at
    least 1; ``None`` (the default) runs the engine's budget (its ``max_steps``, or the
    model file's). ``chunk``: steps between records, at least 1.
    """
    chunk = whole_number(chunk, "record_relaxation: chunk", 1)
    free_steps = _phase_steps(free_steps, "free_steps")
    nudged_steps = _phase_steps(nudged_steps, "nudged_steps")
    if isinstance(engine, TorchEngine) and engine.solver != "euler":
        # the dynamics, not an accelerated solver's iterates (Anderson restarted every
        # chunk, or sweeps of ω·dt on a time axis of dt)
        engine = replace(engine, solver="euler")
    dt, budget, _ = engine.settings(network)
    x = x.to(network.device, network.dtype)
    drive = network.drive(x)
    free_steps = budget if free_steps is None else free_steps
    nudged_steps = budget if nudged_steps is None else nudged_steps
    phases = [("free", 0.0, None, free_steps)]
    if y is not None and beta:
        phases += [("nudged+", beta, "free", nudged_steps),
                   ("nudged-", -beta, "free", nudged_steps)]
    recorded: dict[str, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {}
    finals: dict[str, torch.Tensor] = {}
    for name, phase_beta, start_from, steps in phases:
        state = network.initial_state(x.shape[0]) if start_from is None else finals[start_from]
        states, residuals = [state.cpu().numpy()], [_residual(network, state, drive, y,
                                                              phase_beta)]
        done, at = 0, [0]
        while done < steps:
            n = min(chunk, steps - done)
            state = engine.relax(network, x, y=y, beta=phase_beta, init=state, drive=drive,
                                 max_steps=n, tol=0.0).state
            done += n
            at.append(done)
            states.append(state.cpu().numpy())
            residuals.append(_residual(network, state, drive, y, phase_beta))
        finals[name] = state
        recorded[name] = (at, states, residuals)
    steps_recorded = sorted({n for at, _, _ in recorded.values() for n in at})
    row = {n: i for i, n in enumerate(steps_recorded)}
    shape = (len(phases), len(steps_recorded), x.shape[0], network.state_size)
    state_array = np.full(shape, np.nan)
    residual_array = np.full(shape[:3], np.nan)
    for p, (name, *_rest) in enumerate(phases):
        at, states, residuals = recorded[name]
        rows = [row[n] for n in at]
        state_array[p, rows] = np.stack(states)
        residual_array[p, rows] = np.stack(residuals)
    layer, variable, index = _unit_coordinates(network)
    dataset = xr.Dataset(
        {"state": (("phase", "time", "sample", "unit"), state_array),
         "residual": (("phase", "time", "sample"), residual_array)},
        coords={"phase": [p[0] for p in phases], "time": np.asarray(steps_recorded) * dt * 1e3,
                "layer": ("unit", layer), "variable": ("unit", variable),
                "index": ("unit", index)},
        attrs={"model": network.model.name, "beta": float(beta), "dt_ms": dt * 1e3,
               "title": "relaxation trajectories",
               "model_parameters": str(dict(network.model.parameters))},
    )
    dataset.time.attrs.update(units="ms", long_name="time from the start of each phase")
    dataset.residual.attrs.update(units="1", long_name="max |ds/dt|·τ over the units")
    return dataset


def _phase_steps(steps: object, name: str) -> int | None:
    """A phase's step count as given (a whole number of at least 1), or ``None`` for the
    engine's budget: 0 would record no step, not the whole budget."""
    if steps is None:
        return None
    try:
        return whole_number(steps, f"record_relaxation: {name}", 1)
    except ConfigError as error:
        raise ConfigError(f"{error} (None runs the engine's budget)") from None


def _residual(network: Network, state: torch.Tensor, drive: dict, y: torch.Tensor | None,
              beta: float) -> np.ndarray:
    velocity = network.velocity(state, drive)
    if beta:
        velocity = velocity - beta / network.tau * network.cost_gradient(state, y)
    velocity = velocity * active_mask(network, state, velocity)  # pinned at a bound: settled
    return (velocity.abs().amax(-1) * network.tau).cpu().numpy()


def _unit_coordinates(network: Network) -> tuple[list[str], list[str], list[int]]:
    layer, variable, index = [""] * network.state_size, [""] * network.state_size, \
        [0] * network.state_size
    for block in network.blocks:
        for i in range(block.start, block.stop):
            layer[i] = network.layer_names[block.layer]
            variable[i] = block.variable
            index[i] = i - block.start
    return layer, variable, index


def plot_convergence(traces: xr.Dataset, ax: Axes | None = None) -> Figure | SubFigure:
    """Residual ``max|ds/dt|·τ`` against time, one line per phase (median over samples,
    band from min to max); log scale."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    offset = 0.0
    for phase in traces.phase.values:
        residual = traces.residual.sel(phase=phase).dropna("time", how="all")
        if residual.sizes["time"] == 0:  # not recorded (or NaN throughout): nothing to draw
            continue
        time = residual.time.values + offset
        ax.semilogy(time, residual.median("sample"), label=str(phase))
        ax.fill_between(time, residual.min("sample"), residual.max("sample"), alpha=0.2)
        if phase == "free":
            offset = float(time[-1])
    ax.set_xlabel("time (ms); nudged phases start at the free state")
    ax.set_ylabel("max |ds/dt|·τ")
    ax.set_title("relaxation to the stationary states")
    ax.legend()
    return ax.figure


def _check_sample(traces: xr.Dataset, sample: object) -> None:
    """Refuse a ``sample`` the traces do not hold: one of the ``sample`` coordinate's values
    where there is one, else a position in ``[0, n)``."""
    if "sample" in traces.coords:
        known = traces.sample.values.tolist()
        if sample not in known:
            raise ConfigError(f"plot_phase_portrait: no sample {sample!r} in these traces; "
                              f"their samples: {short(known)}")
        return
    count = traces.sizes.get("sample", 0)
    if isinstance(sample, bool) or not isinstance(sample, numbers.Integral) \
            or not 0 <= sample < count:
        raise ConfigError(f"plot_phase_portrait: sample {sample!r} is not in these traces; "
                          f"they hold samples 0 to {count - 1}" if count else
                          "plot_phase_portrait: these traces hold no sample")


def plot_phase_portrait(traces: xr.Dataset, layer: str | None = None, units: int = 6,
                        sample: int = 0, parameters: dict | None = None,
                        ax: Axes | None = None) -> Figure | SubFigure:
    """Trajectories of a few units of ``layer`` (default: ``hidden1``, or the first layer
    recorded when the network has no hidden layer) in the plane of its first two state
    variables (``(v, w)`` for FHN; ``v`` first wherever a model has one) during the free
    phase, ending at their stationary states (dots). With FHN ``parameters`` (``a``, ``b``)
    the inhibitor nullcline ``w = (v + a)/b`` and the uncoupled activator nullcline
    ``w = v - v³/3`` are drawn."""
    import matplotlib.pyplot as plt

    _check_sample(traces, sample)
    layers = [str(name) for name in dict.fromkeys(traces.layer.values)]
    if layer is None:
        layer = "hidden1" if "hidden1" in layers else layers[0]
    if layer not in layers:
        raise ConfigError(f"plot_phase_portrait: no layer {layer!r} in these traces; they "
                          f"hold {', '.join(layers)}")
    in_layer = traces.layer.values == layer
    variables = [str(v) for v in dict.fromkeys(traces.variable.values[in_layer])]
    if len(variables) < 2:
        raise ConfigError(f"a phase portrait needs two state variables; layer {layer!r} has "
                          f"{', '.join(variables)}")
    if "v" in variables:
        variables.insert(0, variables.pop(variables.index("v")))
    first, second = variables[:2]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    free = traces.state.sel(phase="free", sample=sample).dropna("time", how="all")
    v_units = np.where(in_layer & (traces.variable.values == first))[0][:units]
    w_units = np.where(in_layer & (traces.variable.values == second))[0][:units]
    for vi, wi in zip(v_units, w_units, strict=True):
        v, w = free.isel(unit=vi).values, free.isel(unit=wi).values
        line, = ax.plot(v, w, lw=1)
        ax.plot(v[-1], w[-1], "o", color=line.get_color())
    if parameters and {"a", "b"} <= set(parameters):
        grid = np.linspace(-2.2, 2.2, 200)
        ax.plot(grid, (grid + parameters["a"]) / parameters["b"], "k--", lw=0.8,
                label=f"{second}-nullcline")
        ax.plot(grid, grid - grid ** 3 / 3, "k:", lw=0.8, label=f"{first}-nullcline (no input)")
        ax.set_ylim(*np.percentile(np.concatenate([free.isel(unit=w_units).values.ravel(),
                                                   [-1.5, 1.5]]), [0, 100]))
        ax.legend(fontsize=7)
    ax.set_xlabel(first)
    ax.set_ylabel(second)
    ax.set_title(f"{layer}: free phase, sample {sample}")
    return ax.figure
