"""What every relaxation engine shares: the step, budget and tolerance settings, their
validation, and the model file's defaults for the ones left as ``None``."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

from neuroeq.errors import ConfigError, RelaxationError

if TYPE_CHECKING:
    from neuroeq.network import Network

FAILURE_MODES = ("raise", "warn", "ignore")


class RelaxationSettings:
    """Mixin for engine dataclasses with fields ``dt``, ``max_steps``, ``tol``,
    ``check_every`` and ``on_failure``."""

    def _check_relaxation_settings(self) -> None:
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
