"""How every relaxation engine watches its state and reports the dynamics that do not
settle: per-sample convergence bookkeeping at each check, and the errors for NaN,
divergence, limit cycles and an exhausted budget (naming the layer and the samples)."""

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

    def record(self, residual: torch.Tensor, step: int, tol: float) -> bool:
        """Log a check's residual; ``True`` once every sample has settled (``tol > 0``)."""
        self.residual = residual
        self.history.append(residual)
        if self.keep_trace:
            self.trace.append(float(residual.max()))
        if tol <= 0:
            return False
        below = residual < tol
        self.steps[self.converged & ~below] = -1  # it left the tolerance again
        self.steps[below & ~self.converged] = step
        self.converged = below
        return bool(below.all())


def check_finite(network: Network, state: torch.Tensor, step: int, divergence: float,
                 describe_index: Callable[[int], str], engine: str = "") -> None:
    """Raise a :class:`RelaxationError` (kind ``nan`` or ``diverged``) naming the first bad
    layer and the bad samples when ``state`` is not finite or exceeds ``|s| > divergence``."""
    detached = state.detach()
    if detached.numel() == 0:
        return
    # one reduction on the fast path (NaN propagates through it and fails the comparison);
    # isfinite(s).all() with abs(s).max() took ten times as long on CPU
    if detached.is_complex():
        if float(detached.abs().amax()) <= divergence:
            return
    else:
        low, high = torch.aminmax(detached)  # (two scalar reads, no kernel for max(-low, high))
        if -divergence <= float(low) and float(high) <= divergence:
            return
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


def not_settled(network: Network, last_delta: torch.Tensor, residual: torch.Tensor,
                converged: torch.Tensor, history: list[torch.Tensor], step: int, tol: float,
                describe_index: Callable[[int], str], engine: str = "") -> RelaxationError:
    """The error for samples still above ``tol`` after the budget: kind ``oscillating`` when
    the residual stopped falling (a limit cycle), else ``not_converged``."""
    samples = sample_list(~converged)
    oscillating = stagnating(history)
    kind = "oscillating" if oscillating else "not_converged"
    per_unit = last_delta.reshape(-1, last_delta.shape[-1]).amax(0)
    layer = describe_index(int(per_unit.argmax()))
    if oscillating:
        what = "oscillating: the residual stopped falling, a limit cycle or chatter"
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
