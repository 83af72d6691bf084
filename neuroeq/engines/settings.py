"""What every relaxation engine shares: the step, budget and tolerance settings, their
validation, and the model file's defaults for the ones left as ``None``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from neuroeq.checks import nonnegative_number, positive_number, whole_number, within_dtype
from neuroeq.errors import ConfigError, RelaxationError

if TYPE_CHECKING:
    from neuroeq.network import Network

FAILURE_MODES = ("raise", "warn", "ignore")
#: the floating-point types a network runs in, by the names protocols and the CLI use
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def gradient_check_tolerance(dtype: str) -> float:
    """The residual at which a gradient check's phases count as settled: ``1e-12`` in
    float64, ``1e-5`` in float32 (a few hundred ulps of a unit's state)."""
    return 1e-12 if dtype == "float64" else 1e-5


def start_state(init: object, network: Network, batch: int, *, leading: bool = True,
                engine: str = "the network") -> torch.Tensor:
    """``init`` as a start state: a tensor ``(..., batch, N)`` (``leading=False``: exactly
    ``(batch, N)``), or an earlier phase's result, whose ``state`` it takes; anything else
    is a :class:`ConfigError` naming the shape needed."""
    state = init if isinstance(init, torch.Tensor) else getattr(init, "state", None)
    needed = f"({batch}, {network.state_size}) (samples, layers' units × variables)"
    if not isinstance(state, torch.Tensor):
        raise ConfigError(f"init must be a state tensor of shape {needed} or a phase's result "
                          f"(RelaxResult), got {type(init).__name__}")
    if state.dim() < 2 or state.shape[-2:] != (batch, network.state_size) \
            or (not leading and state.dim() != 2):
        raise ConfigError(f"init has shape {tuple(state.shape)}; {engine} needs {needed} for "
                          f"{batch} samples")
    return state


def check_step_range(network: Network, dt: float, beta: float | complex = 0.0,
                     step: str = "dt") -> None:
    """Refuse, before a phase, a step or a nudge the network's dtype cannot hold: ``dt``,
    ``β``, the Euler step's factor ``dt/τ`` and the nudge's ``dt·|β|/τ`` must not exceed
    ``torch.finfo(network.dtype).max`` (``step`` names ``dt`` in the messages)."""
    dtype, tau = network.dtype, network.tau
    within_dtype(dt, step, dtype, " s")
    within_dtype(beta, "beta", dtype)
    within_dtype(dt / tau, f"the Euler step {step}/tau", dtype,
                 f" ({step} = {dt:g} s, tau = {tau:g} s; lower {step})")
    within_dtype(dt * abs(beta) / tau, f"the nudge step {step}*|beta|/tau", dtype,
                 f" (beta = {beta:g}, {step} = {dt:g} s, tau = {tau:g} s; lower beta)")


class RelaxationSettings:
    """Mixin for engine dataclasses with fields ``dt``, ``max_steps``, ``tol``,
    ``check_every`` and ``on_failure``."""

    def _check_relaxation_settings(self) -> None:
        if self.on_failure not in FAILURE_MODES:
            raise ConfigError(f"on_failure {self.on_failure!r} must be one of "
                              f"{', '.join(FAILURE_MODES)}")
        if self.dt is not None:
            self.dt = positive_number(self.dt, "dt", "seconds")
        if self.max_steps is not None:
            self.max_steps = whole_number(self.max_steps, "max_steps", 1)
        if self.tol is not None:
            self.tol = nonnegative_number(self.tol, "tol")
        self.check_every = whole_number(self.check_every, "check_every", 1)

    def check_range(self, network: Network, beta: float | complex = 0.0,
                    dt: float | None = None) -> None:
        """Refuse a step ``dt`` (default: the engine's) or nudge ``β`` beyond the range of
        the network's dtype (:func:`check_step_range`), before any computation with them."""
        check_step_range(network, self.settings(network)[0] if dt is None else dt, beta)

    def settings(self, network: Network) -> tuple[float, int, float]:
        """``(dt, max_steps, tol)`` with the model's defaults filled in."""
        model = network.model
        dt = self.dt if self.dt is not None else model.integration_setting("dt", 0.1 * model.tau)
        max_steps = int(self.max_steps if self.max_steps is not None
                        else model.integration_setting("max_steps", 5000))
        tol = self.tol if self.tol is not None else model.integration_setting("tol", 1e-6)
        return dt, max_steps, tol

    def _budget(self, network: Network, max_steps: int | None, tol: float | None
                ) -> tuple[float, int, float]:
        """``(dt, max_steps, tol)``: a phase's own budget and tolerance (checked), the
        engine's or the model file's where ``None``."""
        dt, default_steps, default_tol = self.settings(network)
        if max_steps is not None:
            default_steps = whole_number(max_steps, "max_steps", 1)
        if tol is not None:
            default_tol = nonnegative_number(tol, "tol")
        return dt, default_steps, default_tol

    @staticmethod
    def _warm_start(start: object | None, init: object | None, drive: object | None
                    ) -> tuple:
        """``(init, drive)``, from ``start`` (an earlier phase's result) when given."""
        if start is None:
            return init, drive
        if init is not None or drive is not None:
            raise ConfigError("relax: start= gives the initial state and the input currents; "
                              "do not pass init= or drive= with it")
        return start.state, start.drive

    def _report_failure(self, failure: RelaxationError | None, stacklevel: int) -> None:
        """Apply ``on_failure`` to a phase that did not settle: raise, warn or ignore."""
        if failure is None:
            return
        if self.on_failure == "raise":
            raise failure
        if self.on_failure == "warn":
            warnings.warn(str(failure), RuntimeWarning, stacklevel=stacklevel + 1)
