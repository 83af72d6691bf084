"""Torch mean-field engine: batched relaxation of ``ds/dt = F(s)`` to a stationary state.

Euler steps ``s ← Π(s + dt·[F(s) - (β/τ) c(s) + f(s)])`` (``Π`` clamps bounded variables,
``c = ∂C/∂s`` the cost gradient, ``f`` an optional extra force such as AsymEP's
correction) until the residual ``max_i |ds_i/dt|·τ`` of every sample falls below ``tol``
or the step budget is spent. Divergence, NaN and oscillation are detected and raised as
:class:`~neuroeq.errors.RelaxationError` naming the layer and the samples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.network import Network, Params

Force = Callable[[torch.Tensor], torch.Tensor]
FAILURE_MODES = ("raise", "warn", "ignore")


@dataclass
class RelaxResult:
    """A relaxed state and how it got there.

    ``state`` (…, batch, N); ``steps`` per sample: the step at which it met the tolerance
    (-1 if it never did); ``converged`` per sample; ``residual`` per sample at the end
    (``max|ds/dt|·τ``); ``n_steps`` steps taken; ``failure`` the error when not raised;
    ``trace`` the max residual at each check when recorded.
    """

    state: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    n_steps: int
    failure: RelaxationError | None = None
    trace: list[float] = field(default_factory=list)


@dataclass
class TorchEngine:
    """Relaxation settings. ``None`` takes the model file's ``[integration]`` values.

    Args:
        dt: Euler step in seconds.
        max_steps: step budget per phase.
        tol: stop when every sample's ``max|ds/dt|·τ < tol``; ``0`` runs the full budget.
        check_every: steps between convergence checks (each check syncs the device).
        divergence: ``|s|`` above this counts as divergence.
        on_failure: ``raise`` (default), ``warn`` or ``ignore`` when a phase does not settle.
        record_trace: keep the max residual at each check (convergence traces).
    """

    dt: float | None = None
    max_steps: int | None = None
    tol: float | None = None
    check_every: int = 10
    divergence: float = 1e6
    on_failure: str = "raise"
    record_trace: bool = False

    name = "torch"

    def __post_init__(self) -> None:
        if self.on_failure not in FAILURE_MODES:
            raise ConfigError(f"on_failure {self.on_failure!r} must be one of "
                              f"{', '.join(FAILURE_MODES)}")
        if self.dt is not None and not (math.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"dt {self.dt} must be a positive number of seconds")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ConfigError(f"max_steps {self.max_steps} must be at least 1")
        if self.tol is not None and not (math.isfinite(self.tol) and self.tol >= 0):
            raise ConfigError(f"tol {self.tol} must be a non-negative number")
        if int(self.check_every) < 1:
            raise ConfigError(f"check_every {self.check_every} must be at least 1")

    def settings(self, network: Network) -> tuple[float, int, float]:
        """``(dt, max_steps, tol)`` with the model's defaults filled in."""
        model = network.model
        dt = self.dt if self.dt is not None else model.integration_setting("dt", 0.1 * model.tau)
        max_steps = int(self.max_steps if self.max_steps is not None
                        else model.integration_setting("max_steps", 5000))
        tol = self.tol if self.tol is not None else model.integration_setting("tol", 1e-6)
        return dt, max_steps, tol

    def relax(self, network: Network, x: torch.Tensor, *, y: torch.Tensor | None = None,
              beta: float = 0.0, init: torch.Tensor | None = None, force: Force | None = None,
              params: Params | None = None, drive: dict | None = None,
              max_steps: int | None = None, tol: float | None = None) -> RelaxResult:
        """Relax from ``init`` (default: the model's initial state) with nudge ``β``.

        ``x`` (batch, n_in) is clamped; ``y`` the targets (needed when ``β ≠ 0``). Runs
        under autograd when gradients are enabled (BPTT), without it otherwise.
        """
        if beta != 0.0 and y is None:
            raise ConfigError("a nudged phase (beta != 0) needs targets y")
        x = x.to(device=network.device, dtype=network.dtype)
        if drive is None:
            drive = network.drive(x, params)
        state = network.initial_state(x.shape[-2]) if init is None else init.clone()
        nudge = beta / network.tau

        def velocity(s: torch.Tensor) -> torch.Tensor:
            v = network.velocity(s, drive, params)
            if nudge != 0.0:
                v = v - nudge * network.cost_gradient(s, y)
            if force is not None:
                v = v + force(s)
            return v

        project = None
        if network.compiled.bounds:
            project = (lambda s: _project_differentiable(network, s)) if torch.is_grad_enabled() \
                else network.project
        return self.integrate(network, velocity, state, project=project,
                              max_steps=max_steps, tol=tol)

    def integrate(self, network: Network, velocity: Force, state: torch.Tensor, *,
                  project: Force | None = None, max_steps: int | None = None,
                  tol: float | None = None, describe_index: Callable[[int], str] | None = None
                  ) -> RelaxResult:
        """Euler-integrate ``ds/dt = velocity(s)`` (shape ``(..., batch, D)``) to rest.

        The generic loop behind :meth:`relax`, also used for extended states (Dyadic EP's
        ``(m, d)``); ``describe_index`` names the flat index in error messages.
        """
        dt, default_steps, default_tol = self.settings(network)
        max_steps = int(max_steps if max_steps is not None else default_steps)
        tol = float(tol if tol is not None else default_tol)
        describe_index = describe_index or network.layer_of_index
        scale = network.tau / dt  # residual = max |ds/dt| · τ
        leading = state.shape[:-1]
        converged = torch.zeros(leading, dtype=torch.bool, device=state.device)
        steps = torch.full(leading, -1, dtype=torch.long, device=state.device)
        residual = torch.full(leading, math.inf, dtype=state.real.dtype, device=state.device)
        last_delta = torch.zeros_like(state)
        history: list[torch.Tensor] = []
        trace: list[float] = []
        step = 0
        for step in range(1, max_steps + 1):
            new_state = state + dt * velocity(state)
            if project is not None:
                new_state = project(new_state)
            check = step % self.check_every == 0 or step == max_steps
            if check:
                last_delta = (new_state - state).detach().abs()
                residual = last_delta.amax(-1) * scale
            state = new_state
            if not check:
                continue
            self._check_finite(state, step, network, describe_index)
            history.append(residual)
            if self.record_trace:
                trace.append(float(residual.max()))
            if tol > 0:
                newly = (residual < tol) & ~converged
                steps[newly] = step
                converged |= newly
                if bool(converged.all()):
                    break
        failure = None
        if tol > 0 and not bool(converged.all()):
            failure = self._not_settled(network, last_delta, residual, converged, history, step,
                                        tol, describe_index)
            if self.on_failure == "raise":
                raise failure
            if self.on_failure == "warn":
                warnings.warn(str(failure), RuntimeWarning, stacklevel=3)
        return RelaxResult(state=state, steps=steps, converged=converged, residual=residual,
                           n_steps=step, failure=failure, trace=trace)

    # ----------------------------------------------------------------- failures
    def _check_finite(self, state: torch.Tensor, step: int, network: Network,
                      describe_index: Callable[[int], str]) -> None:
        detached = state.detach()
        finite = torch.isfinite(detached)
        if bool(finite.all()) and float(detached.abs().max()) <= self.divergence:
            return
        bad = ~finite.all(-1) | (detached.abs().amax(-1) > self.divergence)
        samples = _sample_list(bad)
        flat = detached.reshape(-1, detached.shape[-1])
        bad_units = (~torch.isfinite(flat) | (flat.abs() > self.divergence)).any(0)
        first = int(bad_units.nonzero()[0]) if bool(bad_units.any()) else 0
        layer = describe_index(first)
        kind = "nan" if not bool(finite.all()) else "diverged"
        what = "became NaN/inf" if kind == "nan" else f"exceeded |s| > {self.divergence:g}"
        raise RelaxationError(
            f"layer {layer!r}: {network.model.name} state {what} after {step} steps for samples "
            f"{_short(samples)}; lower dt, the weight gain or the input scale"
            f"{_hint(network)}", kind=kind, layer=layer, samples=samples)

    def _not_settled(self, network: Network, last_delta: torch.Tensor, residual: torch.Tensor,
                     converged: torch.Tensor, history: list[torch.Tensor], step: int,
                     tol: float, describe_index: Callable[[int], str]) -> RelaxationError:
        samples = _sample_list(~converged)
        oscillating = _stagnating(history)
        kind = "oscillating" if oscillating else "not_converged"
        per_unit = last_delta.reshape(-1, last_delta.shape[-1]).amax(0)
        layer = describe_index(int(per_unit.argmax()))
        what = ("oscillating: the residual stopped falling, a limit cycle or chatter"
                if oscillating else "still converging: raise max_steps or use a larger dt")
        return RelaxationError(
            f"layer {layer!r}: {network.model.name} state did not settle after {step} steps "
            f"(max |ds/dt|·τ = {float(residual.max()):.3g} > tol {tol:g}, {what}) for samples "
            f"{_short(samples)}{_hint(network)}",
            kind=kind, layer=layer, samples=samples, residual=float(residual.max()))


def _project_differentiable(network: Network, state: torch.Tensor) -> torch.Tensor:
    pieces = []
    for block in network.blocks:
        piece = state[..., block.start:block.stop]
        if block.variable in network.compiled.bounds:
            low, high = network.compiled.bounds[block.variable]
            piece = piece.clamp(low, high)
        pieces.append(piece)
    return torch.cat(pieces, dim=-1)


def _stagnating(history: list[torch.Tensor]) -> bool:
    """True when the max residual over the last quarter of checks is not falling."""
    if len(history) < 8:
        return False
    values = torch.stack([h.max() for h in history]).double()
    quarter = len(values) // 4
    recent = float(values[-quarter:].min())
    earlier = float(values[-2 * quarter:-quarter].min())
    return recent > 0.5 * earlier


def _sample_list(mask: torch.Tensor) -> list[int]:
    return [int(i) for i in mask.reshape(-1).nonzero().reshape(-1).tolist()]


def _short(samples: list[int]) -> str:
    if len(samples) <= 8:
        return str(samples)
    return f"{samples[:8]}... ({len(samples)} samples)"


def _hint(network: Network) -> str:
    hint = network.model.integration.get("stability_hint")
    return f"; {hint}" if hint else ""
