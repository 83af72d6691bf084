"""Data sets as tensors: the built-in digits task, MNIST and Fashion-MNIST (IDX files from
a directory the user names)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from neuroeq.checks import whole_number
from neuroeq.data.builtin import load_digits_split
from neuroeq.data.idx import DATA_DIR_ENV, load_idx_split, read_idx
from neuroeq.errors import ConfigError

DATASETS = ("digits", "mnist", "fashion_mnist")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class LabeledData:
    """``x`` (N, D) float32 in [0, 1], ``y`` (N,) int64, ``n_classes``, ``name``."""

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    name: str

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        if self.x.dim() != 2 or self.y.dim() != 1 or len(self.x) != len(self.y):
            raise ConfigError(f"{where}: x {tuple(self.x.shape)} and y {tuple(self.y.shape)} "
                              "must be (samples, features) and (samples,)")
        if self.y.is_floating_point() or self.y.is_complex() or self.y.dtype == torch.bool:
            raise ConfigError(f"{where}: y must hold integer class labels, got {self.y.dtype}")
        if not (isinstance(self.n_classes, int) and self.n_classes >= 1):
            raise ConfigError(f"{where}: n_classes {self.n_classes!r} must be a positive "
                              "integer")
        if len(self.y) and not (int(self.y.min()) >= 0 and int(self.y.max()) < self.n_classes):
            raise ConfigError(f"{where}: labels span {int(self.y.min())}..{int(self.y.max())}, "
                              f"outside [0, {self.n_classes}) for its {self.n_classes} classes")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_features(self) -> int:
        return self.x.shape[1]


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 limit: int | None = None) -> LabeledData:
    """Load ``digits`` (built in), ``mnist`` or ``fashion_mnist`` (IDX files under ``root``
    or ``$NEUROEQ_DATA_DIR``, ``~`` expanded); ``limit`` (a whole number ≥ 1, or ``None``)
    keeps the first ``limit`` samples."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} must be 'train' or 'test'")
    if limit is not None:
        limit = whole_number(limit, "limit", minimum=1)
    if name == "digits":
        if root is not None:
            warnings.warn(f"data set 'digits' is built in; root {str(root)!r} is not read "
                          "(it is for mnist and fashion_mnist)", RuntimeWarning, stacklevel=2)
        x, y = load_digits_split(split)
    else:
        images, labels = load_idx_split(name, split, root)
        x = images.reshape(len(images), -1).astype("float32") / 255.0
        y = labels.astype("int64")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return LabeledData(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 10, name)


__all__ = ["DATASETS", "DATA_DIR_ENV", "LabeledData", "load_dataset", "read_idx"]
