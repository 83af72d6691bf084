"""Training settings, validated with errors that name the field."""

from __future__ import annotations

import math
import numbers
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
    ``seed`` sets the batch order, torch's global generator during the run and the rule's
    own random streams (:meth:`GradientEstimator.reseed`). Numbers may be numpy or torch
    scalars; every field is kept as a plain Python value, and ``extra`` may hold only
    strings, numbers, booleans, ``None`` and lists and tables of them (what a checkpoint
    stores without pickled code).
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
        for name in SCALAR_FIELDS:  # numpy and torch scalars become Python values
            setattr(self, name, scalar_value(getattr(self, name)))
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
        self.lr = _check_rates(self.lr)
        self.lr_decay = _check_decay(self.lr_decay)
        for name in ("momentum", "weight_decay"):
            setattr(self, name, nonnegative_number(getattr(self, name), f"training.{name}"))
        if self.optimizer == "adam" and self.momentum:
            raise ConfigError(f"training.momentum {self.momentum!r} is an SGD setting; Adam "
                              "keeps its own moment estimates (leave momentum at 0)")
        self.seed = check_seed(self.seed, "training.seed")
        if not isinstance(self.persistent_particles, bool):
            raise ConfigError(f"training.persistent_particles must be true or false, got "
                              f"{self.persistent_particles!r}")
        if not isinstance(self.extra, Mapping):
            raise ConfigError(f"training.extra must be a table, got "
                              f"{type(self.extra).__name__}")
        self.extra = plain_value(self.extra, "training.extra")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the fields that hold one value (``lr`` may be a table, ``extra`` is one)
SCALAR_FIELDS = ("epochs", "batch_size", "optimizer", "lr_decay", "momentum",
                 "weight_decay", "persistent_particles", "eval_every", "eval_batch_size",
                 "seed", "checkpoint_every", "on_nonconvergence", "limit_train", "limit_test")


def scalar_value(value: object) -> object:
    """A zero-dimensional numpy or torch value (``np.float32(0.9)``, ``torch.tensor(3)``,
    ``np.str_("sgd")``) as the Python value it holds; anything else as it is."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def _check_rates(lr: object) -> float | dict[str, float]:
    """``training.lr``: one rate, or a table of rates (a plain ``dict``: checkpoints and
    datasets keep it) with string keys."""
    if not isinstance(lr, Mapping):
        return nonnegative_number(scalar_value(lr), "training.lr")
    rates = {}
    for key, rate in lr.items():
        key = scalar_value(key)
        if not isinstance(key, str):
            raise ConfigError(f"training.lr names parameters by strings, got the key {key!r}")
        rates[str(key)] = nonnegative_number(scalar_value(rate), f"training.lr.{key}")
    return rates


def _check_decay(decay: object) -> float:
    """``training.lr_decay`` as a ``float`` in ``(0, 1]``."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) \
            or not math.isfinite(decay) or not 0 < decay <= 1:
        raise ConfigError(f"training.lr_decay must lie in (0, 1], got {decay!r}")
    return float(decay)


def plain_value(value: object, where: str) -> Any:
    """``value`` with every part a plain ``str``, ``int``, ``float``, ``bool`` or ``None``
    in lists and string-keyed dicts (numpy and torch scalars converted, tuples made
    lists); a :class:`ConfigError` naming the part (``where``) that is something else."""
    value = scalar_value(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        table = {}
        for key, item in value.items():
            key = scalar_value(key)
            if not isinstance(key, str):
                raise ConfigError(f"{where} has the key {key!r}: a table's keys must be "
                                  "strings")
            table[str(key)] = plain_value(item, f"{where}[{str(key)!r}]")
        return table
    if isinstance(value, (list, tuple)):
        return [plain_value(item, f"{where}[{number}]") for number, item in enumerate(value)]
    raise ConfigError(f"{where} holds a {type(value).__name__} ({_short_repr(value)}); it may "
                      "hold only strings, numbers, booleans, None and lists and tables of "
                      "them (what a checkpoint stores without pickled code)")


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
