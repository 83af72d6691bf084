"""Training settings, validated with errors that name the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from neuroeq.checks import nonnegative_number, whole_number
from neuroeq.errors import ConfigError
from neuroeq.seeds import check_seed

OPTIMIZERS = ("sgd", "adam")
NONCONVERGENCE_POLICIES = ("stop", "skip", "continue")


@dataclass
class TrainConfig:
    """How to train.

    ``lr`` is one rate or a mapping from parameter names (``"W1"``, ``"b2"``,
    ``"readout"`` or full names such as ``"weights.W1"``) to rates, with ``"default"``
    for the rest; epoch ``e`` uses ``lr · lr_decay^(e-1)``. ``persistent_particles``
    warm-starts each sample's free phase from its last free state.
    ``on_nonconvergence``: ``stop`` (raise; with an ``out_dir`` the metrics of the epochs
    done are written first, and the checkpoint keeps the last epoch it was written at),
    ``skip`` the batch, or ``continue`` with the unsettled state; counts are recorded per
    epoch (an epoch whose batches were all skipped has NaN train loss and accuracy).
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | dict[str, float] = 0.05
    lr_decay: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    persistent_particles: bool = False
    eval_every: int = 1
    eval_batch_size: int = 1000
    seed: int = 0
    checkpoint_every: int = 1
    on_nonconvergence: str = "continue"
    limit_train: int | None = None
    limit_test: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size",
                     "checkpoint_every"):
            setattr(self, name, whole_number(getattr(self, name), f"training.{name}", 1))
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) is not None:
                setattr(self, name, whole_number(getattr(self, name), f"training.{name}", 1))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"training.optimizer {self.optimizer!r} must be one of "
                              f"{', '.join(OPTIMIZERS)}")
        if self.on_nonconvergence not in NONCONVERGENCE_POLICIES:
            raise ConfigError(f"training.on_nonconvergence {self.on_nonconvergence!r} must be "
                              f"one of {', '.join(NONCONVERGENCE_POLICIES)}")
        if isinstance(self.lr, Mapping):  # a plain dict (checkpoints and datasets keep it)
            self.lr = {str(key): nonnegative_number(rate, f"training.lr.{key}")
                       for key, rate in self.lr.items()}
        else:
            self.lr = nonnegative_number(self.lr, "training.lr")
        if (not isinstance(self.lr_decay, (int, float)) or not math.isfinite(self.lr_decay)
                or not 0 < self.lr_decay <= 1):
            raise ConfigError(f"training.lr_decay must lie in (0, 1], got {self.lr_decay!r}")
        for name in ("momentum", "weight_decay"):
            setattr(self, name, nonnegative_number(getattr(self, name), f"training.{name}"))
        if self.optimizer == "adam" and self.momentum:
            raise ConfigError(f"training.momentum {self.momentum!r} is an SGD setting; Adam "
                              "keeps its own moment estimates (leave momentum at 0)")
        self.seed = check_seed(self.seed, "training.seed")
        if not isinstance(self.persistent_particles, bool):
            raise ConfigError(f"training.persistent_particles must be true or false, got "
                              f"{self.persistent_particles!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
