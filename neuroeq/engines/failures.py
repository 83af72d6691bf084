"""How every relaxation engine watches its state and reports the dynamics that do not
settle: per-sample convergence bookkeeping at each check, and the errors for NaN,
divergence, limit cycles and an exhausted budget (naming the layer and the samples).

The residual of an Euler step, ``|G(s) - s|·τ/dt``, is measured in the state's dtype: it
cannot resolve less than one rounding step of the state, ``eps·max|s|·τ/dt`` per sample
(:func:`residual_floor`; 1.19e-6 for a float32 FHN state near ``|v| = 1`` at ``τ/dt = 10``,
above the model file's ``tol = 1e-6``). A sample whose residual is at or below its floor
has settled at working precision: it counts as settled whatever ``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from neuroeq.errors import RelaxationError, sample_list, short
from neuroeq.network import Network


class ConvergenceLog:
    """Per-sample convergence of one relaxation: whether each sample's last checked
    ``residual = max|ds/dt|·τ`` is below ``tol``, the check from which it has stayed below
    (``-1`` if it is not: a sample that settled and moved on, as near a saddle while the
    batch runs on for the others, counts as unsettled again), the last residual, and the
    residual at every check (``history``, for telling a limit cycle from slow settling)."""

    def __init__(self, leading: tuple[int, ...] | torch.Size, dtype: torch.dtype,
                 device: torch.device | str = "cpu", keep_trace: bool = False):
        self.converged = torch.zeros(leading, dtype=torch.bool, device=device)
        self.steps = torch.full(leading, -1, dtype=torch.long, device=device)
        self.residual = torch.full(leading, math.inf, dtype=dtype, device=device)
        self.history: list[torch.Tensor] = []
        self.trace: list[float] = []
        self.keep_trace = keep_trace

    def record(self, residual: torch.Tensor, step: int, tol: float,
               floor: torch.Tensor | None = None) -> bool:
        """Log a check's residual; ``True`` once every sample has settled (``tol > 0``).
        ``floor``: per sample, the residual at or below which it has settled at working
        precision (:func:`residual_floor`), where ``tol`` may be below it."""
        self.residual = residual
        self.history.append(residual)
        if self.keep_trace:
            self.trace.append(float(residual.max()))
        if tol <= 0:
            return False
        below = residual < tol
        if floor is not None:
            below |= residual <= floor
        self.steps[self.converged & ~below] = -1  # it left the tolerance again
        self.steps[below & ~self.converged] = step
        self.converged = below
        return bool(below.all())


def check_finite(network: Network, state: torch.Tensor, step: int, divergence: float,
                 describe_index: Callable[[int], str], engine: str = "") -> float:
    """Raise a :class:`RelaxationError` (kind ``nan`` or ``diverged``) naming the first bad
    layer and the bad samples when ``state`` is not finite or exceeds ``|s| > divergence``;
    otherwise return ``max|s|`` over the whole state (read on the way, at no extra cost)."""
    detached = state.detach()
    if detached.numel() == 0:
        return 0.0
    # one reduction on the fast path (NaN propagates through it and fails the comparison);
    # isfinite(s).all() with abs(s).max() took ten times as long on CPU
    if detached.is_complex():
        if (peak := float(detached.abs().amax())) <= divergence:
            return peak
    else:
        low, high = torch.aminmax(detached)  # (two scalar reads, no kernel for max(-low, high))
        low, high = float(low), float(high)
        if -divergence <= low and high <= divergence:
            return max(-low, high)
    finite = torch.isfinite(detached)
    bad_units = ~finite | (detached.abs() > divergence)
    samples = sample_list(bad_units.any(-1))
    per_unit = bad_units.reshape(-1, bad_units.shape[-1]).any(0)
    layer = describe_index(int(per_unit.nonzero()[0]) if bool(per_unit.any()) else 0)
    kind = "nan" if not bool(finite.all()) else "diverged"
    what = "became NaN/inf" if kind == "nan" else f"exceeded |s| > {divergence:g}"
    raise RelaxationError(
        f"layer {layer!r}: {network.model.name} state{engine} {what} after {step} steps for "
        f"samples {short(samples)}; lower dt, the weight gain or the input scale"
        f"{stability_hint(network)}", kind=kind, layer=layer, samples=samples)


#: a residual within this many times its sample's :func:`residual_floor` is rounding:
#: a failure there names the dtype's resolution instead of a limit cycle
FLOOR_MARGIN = 4.0


def floor_might_bind(tol: float, peak: float, dtype: torch.dtype, scale: float) -> bool:
    """Whether some sample's :func:`residual_floor` may reach ``tol > 0`` (or a residual),
    given a bound ``peak`` on ``max|s|`` (the whole state's, or the divergence bound):
    ``tol <= 2·eps·peak·scale`` (the factor 2 covers the floors' own rounding in
    ``dtype``). Only then are the floors computed; otherwise a residual at its floor is
    below ``tol`` anyway, and the criterion is ``tol``'s alone."""
    return 0 < tol <= 2.0 * torch.finfo(dtype).eps * peak * scale


def residual_floor(state: torch.Tensor, scale: float) -> torch.Tensor:
    """The least residual ``|G(s) - s|·scale`` the state's dtype resolves, per sample:
    ``eps·max_i|s_i|·scale`` (``scale = τ/dt``), one rounding step of its largest unit, an
    upper bound of one ulp of every unit (leading dimensions of ``state``)."""
    state = state.detach()
    if state.is_complex():
        peak = state.abs().amax(-1)
    else:  # max(-min, max) without abs()'s copy of the state
        peak = torch.maximum(state.amin(-1).neg_(), state.amax(-1))
    return peak.mul_(torch.finfo(peak.dtype).eps * scale)


def floor_notice(dtype: torch.dtype, tol: float, scale: float) -> str:
    """The warning for a phase whose samples settled at their :func:`residual_floor`, above
    ``tol`` (the same text for the same settings, so it is shown once)."""
    name = str(dtype).removeprefix("torch.")
    unit = torch.finfo(dtype).eps * scale
    advice = "use a float64 network or " if dtype != torch.float64 else ""
    return (f"tol {tol:g} is below the {name} resolution of the residual, "
            f"eps·max|s|·τ/dt = {unit:.3g}·max|s| (τ/dt = {scale:g}): samples whose residual "
            f"reached it count as settled at working precision (RelaxResult.at_floor); "
            f"{advice}raise tol above it to have tol itself met")


def _at_floor_text(residual: torch.Tensor, converged: torch.Tensor,
                   floor: torch.Tensor | None) -> str | None:
    """Why a residual that stopped falling did, when every unsettled sample's residual is
    within :data:`FLOOR_MARGIN` of its floor: rounding, not a limit cycle; else ``None``."""
    if floor is None:
        return None
    unsettled = ~converged
    if not bool((residual[unsettled] <= FLOOR_MARGIN * floor[unsettled]).all()):
        return None
    worst = float(floor[unsettled].max())
    name = str(floor.dtype).removeprefix("torch.")
    advice = "a float64 network or " if floor.dtype != torch.float64 else ""
    return (f"oscillating at the {name} resolution of the residual, eps·max|s|·τ/dt = "
            f"{worst:.3g}: rounding chatter of the state rather than a limit cycle; use "
            f"{advice}tol >= {FLOOR_MARGIN * worst:.2g}")


def not_settled(network: Network, last_delta: torch.Tensor, residual: torch.Tensor,
                converged: torch.Tensor, history: list[torch.Tensor], step: int, tol: float,
                describe_index: Callable[[int], str], engine: str = "",
                floor: torch.Tensor | None = None) -> RelaxationError:
    """The error for samples still above ``tol`` after the budget: kind ``oscillating`` when
    the residual stopped falling (a limit cycle), else ``not_converged``. With ``floor``
    (:func:`residual_floor` of the last state), a residual that stopped falling within
    :data:`FLOOR_MARGIN` of it in every unsettled sample is said to be rounding at the
    dtype's resolution instead of a limit cycle (the kind stays, as in the Brian2 engine)."""
    samples = sample_list(~converged)
    oscillating = stagnating(history)
    kind = "oscillating" if oscillating else "not_converged"
    per_unit = last_delta.reshape(-1, last_delta.shape[-1]).amax(0)
    layer = describe_index(int(per_unit.argmax()))
    if oscillating:
        what = (_at_floor_text(residual, converged, floor)
                or "oscillating: the residual stopped falling, a limit cycle or chatter")
    elif len(history) < MIN_CHECKS_FOR_TREND:  # too few checks to tell a trend
        what = (f"only {len(history)} convergence checks, too few to tell a slow approach "
                "from a limit cycle: raise max_steps or lower check_every")
    else:
        what = "still converging: raise max_steps or use a larger dt"
    worst = float(residual.max())
    return RelaxationError(
        f"layer {layer!r}: {network.model.name} state{engine} did not settle after {step} "
        f"steps (max |ds/dt|·τ = {worst:.3g} > tol {tol:g}, {what}) for samples "
        f"{short(samples)}{stability_hint(network)}",
        kind=kind, layer=layer, samples=samples, residual=worst)


#: checks of the residual needed before its trend says "limit cycle" or "still converging"
MIN_CHECKS_FOR_TREND = 8


def stagnating(history: list[torch.Tensor]) -> bool:
    """True when the max residual over the last quarter of checks is not falling: its
    smallest value there is above half the quarter's before. A residual that fell at every
    check of the last half is a slow approach, not a limit cycle (a slow mode, or a small
    ``dt`` with a modest budget: a quarter of the checks spanning less than about 0.7 of
    the slowest time constant)."""
    if len(history) < MIN_CHECKS_FOR_TREND:
        return False
    values = torch.stack([h.max() for h in history]).double()
    quarter = len(values) // 4
    last_half = values[-2 * quarter:]
    if bool((last_half[1:] < last_half[:-1]).all()):
        return False
    recent = float(values[-quarter:].min())
    earlier = float(values[-2 * quarter:-quarter].min())
    return recent > 0.5 * earlier


def stability_hint(network: Network) -> str:
    """The model file's advice on the regime that settles, if it gives one."""
    hint = network.model.integration.get("stability_hint")
    return f"; {hint}" if hint else ""
