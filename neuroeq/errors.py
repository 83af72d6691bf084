"""Errors raised by neuroeq. Each names the thing that is wrong and what would be right."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class NeuroEQError(Exception):
    """Base class: every error neuroeq raises on purpose."""


class ConfigError(NeuroEQError, ValueError):
    """A bad value in a network, rule, protocol or command-line setting."""


class ModelError(ConfigError):
    """A model file that cannot be read, parsed or used."""


class TrainingError(NeuroEQError, RuntimeError):
    """Training that cannot go on: parameters that became NaN or inf."""


class RelaxationError(NeuroEQError, RuntimeError):
    """Dynamics that did not settle to a stationary state.

    ``kind`` is one of ``"diverged"``, ``"nan"``, ``"oscillating"``, ``"not_converged"``,
    ``"unstable"`` (an accelerated solver found a fixed point the dynamics leave);
    ``layer`` names the layer with the largest residual and ``samples`` lists the samples
    that did not settle.
    """

    def __init__(self, message: str, *, kind: str, layer: str | None = None,
                 samples: list[int] | None = None, residual: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.layer = layer
        self.samples = samples or []
        self.residual = residual


def sample_list(mask: torch.Tensor) -> list[int]:
    """Flat indices of the samples where ``mask`` is true (for the messages above)."""
    return [int(i) for i in mask.reshape(-1).nonzero().reshape(-1).tolist()]


def short(samples: list[int]) -> str:
    """At most eight sample indices, then a count."""
    if len(samples) <= 8:
        return str(samples)
    return f"{samples[:8]}... ({len(samples)} samples)"
