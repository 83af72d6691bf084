"""Errors raised by neuroeq. Each names the thing that is wrong and what would be right."""

from __future__ import annotations


class NeuroEQError(Exception):
    """Base class: every error neuroeq raises on purpose."""


class ConfigError(NeuroEQError, ValueError):
    """A bad value in a network, rule, protocol or command-line setting."""


class ModelError(ConfigError):
    """A model file that cannot be read, parsed or used."""


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
