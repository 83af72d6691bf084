"""Fixed-point stability of a neuron model over a grid of its parameters: an isolated unit
and a small coupled net relaxed with the torch engine, then the eigenvalues of ``J`` at the
fixed point (found by Newton's method where the relaxation does not settle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from neuroeq.engines.torch_engine import TorchEngine
from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.io import software_attrs
from neuroeq.network import Network
from neuroeq.neuron_model import NeuronModel, load_model
from neuroeq.rules.oracles import jacobian
from neuroeq.rules.phases import active_mask

#: the most grid points a scan relaxes (each a unit and a net)
MAX_GRID_POINTS = 10_000


def stability_scan(model: NeuronModel | str, grid: Mapping[str, Sequence[float]], *,
                   sizes: Sequence[int] = (4, 6, 3), batch: int = 4, seed: int = 0,
                   max_steps: int | None = None) -> xr.Dataset:
    """Fixed-point stability over a grid of model parameters (one dim per parameter).

    For every grid point: an isolated unit (no input, zero bias) and a coupled test net
    (``sizes``, symmetric coupling, ``seed``, ``batch`` random inputs) are relaxed with the
    torch engine; ``unit_settled`` / ``net_settled_fraction`` say whether they reached a
    stationary state, and ``unit_max_real_eig`` / ``net_max_real_eig`` give
    ``max Re λ(J)·τ`` at the fixed point (negative: stable). Where the relaxation did not
    settle, the fixed point is located by Newton's method from the final state, so a
    positive value there means an unstable fixed point (a limit cycle around it); NaN means
    no fixed point was found (the net's value is the largest over the samples where one
    was). Units pinned at a bound by the dynamics count as settled (their Jacobian row is
    ``-1/τ``, as in the implicit-differentiation oracle). A point whose relaxation blows
    up (NaN or divergence) reads as not settled, with Newton's fixed point from the initial
    state: not settled with a negative eigenvalue is a stable fixed point that Euler steps
    of the model file's ``dt`` overshoot (FHN at ``eps = 100``), not unstable dynamics.
    """
    model = load_model(model) if not isinstance(model, NeuronModel) else model
    if not 1 <= len(grid) <= 2:
        raise ConfigError(f"grid over {', '.join(map(str, grid)) or 'no parameter'}: give "
                          "one or two parameters to scan")
    if math.prod(len(values) for values in grid.values()) > MAX_GRID_POINTS:
        raise ConfigError(f"grid over {', '.join(map(str, grid))}: at most "
                          f"{MAX_GRID_POINTS:,} points (each relaxes a network)")
    names = list(grid)
    unknown = set(names) - set(model.parameters)
    if unknown:
        raise ConfigError(f"grid: unknown parameter(s) {sorted(unknown)} of model "
                          f"{model.name!r}; known: {', '.join(sorted(model.parameters))}")
    shape = tuple(len(grid[n]) for n in names)
    unit_settled = np.zeros(shape, dtype=bool)
    unit_eig = np.full(shape, np.nan)
    net_settled = np.zeros(shape)
    net_eig = np.full(shape, np.nan)
    engine = TorchEngine(on_failure="ignore", max_steps=max_steps)
    for index in np.ndindex(*shape):
        values = {n: float(grid[n][i]) for n, i in zip(names, index, strict=True)}
        variant = model.with_parameters(**values)
        unit = Network(variant, (1, 1), coupling="symmetric", seed=seed)
        with torch.no_grad():
            unit.weights["W1"].zero_()
        settled, eig = _settle(engine, unit, torch.zeros(1, 1, dtype=unit.dtype))
        unit_settled[index], unit_eig[index] = bool(settled.all()), float(eig.max())
        net = Network(variant, sizes, coupling="symmetric", seed=seed)
        generator = torch.Generator().manual_seed(seed + 99)
        x = torch.rand(batch, sizes[0], generator=generator, dtype=net.dtype)
        settled, eig = _settle(engine, net, x)
        # the largest over the samples whose fixed point was found (NaN if none was)
        found = eig[~torch.isnan(eig)]
        net_settled[index] = float(settled.double().mean())
        net_eig[index] = float(found.max()) if found.numel() else math.nan
    coords = {n: list(grid[n]) for n in names}

    return xr.Dataset(
        {"unit_settled": (names, unit_settled), "unit_max_real_eig": (names, unit_eig),
         "net_settled_fraction": (names, net_settled), "net_max_real_eig": (names, net_eig)},
        coords=coords,
        attrs={"title": "neuroeq fixed-point stability scan", "model": model.name,
               "sizes": str(list(sizes)), "batch": batch, "seed": seed,
               "eigenvalues": "max Re(lambda) * tau of J at the fixed point",
               **software_attrs()})


def _settle(engine: TorchEngine, network: Network, x: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relax; per sample: settled flag and ``max Re λ(J)·τ`` at the (Newton) fixed point.
    A relaxation that blows up (NaN, divergence: often the model file's ``dt`` too large
    for the point's time scales) settles nowhere; Newton then starts from the initial state."""
    try:
        with torch.no_grad():
            result = engine.relax(network, x)
        state, settled = result.state, result.converged
    except RelaxationError as error:
        if error.kind not in ("nan", "diverged"):
            raise
        state = network.initial_state(x.shape[0])
        settled = torch.zeros(x.shape[0], dtype=torch.bool, device=state.device)
    if not bool(settled.all()):
        state = _newton(network, state, x)
    drive = network.drive(x)
    with torch.no_grad():
        velocity = network.velocity(state, drive)
    # a bounded unit pinned at its bound by F (a saturated hard sigmoid) is settled there:
    # its velocity does not count and its row of J is -1/τ, as in the implicit oracle
    mask = active_mask(network, state, velocity)
    residual = (velocity * mask).abs().amax(-1) * network.tau
    J = jacobian(network, state, x).detach()
    eye = torch.eye(network.state_size, dtype=J.dtype, device=J.device)
    J = mask.unsqueeze(-1) * J + (1 - mask).unsqueeze(-1) * (-eye / network.tau)
    # (a state Newton left non-finite gives no eigenvalue: NaN below, not an eig error)
    eig = torch.linalg.eigvals(torch.nan_to_num(J)).real.amax(-1) * network.tau
    eig = torch.where(residual < 1e-4, eig, torch.full_like(eig, math.nan))
    return settled, eig


def _newton(network: Network, state: torch.Tensor, x: torch.Tensor, iterations: int = 30
            ) -> torch.Tensor:
    """Newton's method on ``F(s) = 0`` from ``state`` (per sample)."""
    drive = network.drive(x)
    for _ in range(iterations):
        with torch.no_grad():
            velocity = network.velocity(state, drive)
        if float(velocity.abs().max()) * network.tau < 1e-12:
            break
        J = jacobian(network, state, x).detach()
        try:
            step = torch.linalg.solve(J, velocity.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:  # singular Jacobian: no Newton step
            break
        state = state - step
        if not bool(torch.isfinite(state).all()):
            break
    return state.detach()


def stability_lines(ds: xr.Dataset) -> list[str]:
    """The scan as report lines: per grid point, whether the unit and the net settle and
    ``max Re λ·τ`` at their fixed points."""
    names = list(ds.unit_settled.dims)
    lines = [f"  fixed-point stability over {' x '.join(names)} "
             f"(test net {ds.attrs['sizes']}, {ds.attrs['batch']} samples):",
             "    " + "  ".join(f"{n:>8}" for n in names)
             + "  unit: settles  max Re(l)*tau |  net: settled  max Re(l)*tau"]
    flat = ds.stack(point=names)
    for i in range(flat.sizes["point"]):
        point = flat.isel(point=i)
        values = "  ".join(f"{float(point[n]):>8.4g}" for n in names)
        lines.append(
            f"    {values}  {_yes(point.unit_settled):>12}  "
            f"{float(point.unit_max_real_eig):>+12.3g}"
            f" |  {float(point.net_settled_fraction):>11.0%}  "
            f"{float(point.net_max_real_eig):>+12.3g}")
    return lines


def _yes(value: xr.DataArray) -> str:
    return "yes" if bool(value) else "NO"
