"""Checkpoints written atomically (temp file + fsync + rename) and read without unpickling code
(``torch.load(weights_only=True)``)."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from neuroeq.errors import ConfigError, TrainingError
from neuroeq.io import write_file

CHECKPOINT_NAME = "checkpoint.pt"

#: what a checkpoint holds besides tensors: the types ``torch.load(weights_only=True)``
#: reads back (compared exactly: ``np.float64`` is a ``float`` but would be pickled as one
#: of numpy's, which that load refuses)
PLAIN_TYPES = (str, int, float, bool, type(None))
CONTAINER_TYPES = (dict, OrderedDict, list, tuple, torch.Size)


def check_storable(value: object, where: str = "the checkpoint") -> None:
    """A :class:`TrainingError` naming the first part of ``value`` that a checkpoint read
    without unpickling code could not hold (anything but tensors, plain numbers, strings,
    booleans, ``None`` and lists, tuples and dicts of them)."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN_TYPES:
        return
    if type(value) not in CONTAINER_TYPES:
        raise TrainingError(f"{where} holds a {type(value).__module__}."
                            f"{type(value).__name__} ({value!r:.60}), which a checkpoint "
                            "read with torch.load(weights_only=True) cannot hold; give "
                            "plain Python numbers, strings, lists and dicts")
    if isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, f"{where} (a key)")
            check_storable(item, f"{where}[{key!r}]")
    else:
        for number, item in enumerate(value):
            check_storable(item, f"{where}[{number}]")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) atomically and synced to
    disk (:func:`neuroeq.io.write_file`: a failed write leaves the previous checkpoint and
    no temporary); a payload :func:`load_checkpoint` could not read back is refused before
    anything is written (:func:`check_storable`)."""
    check_storable(payload)
    write_file(path, lambda handle: torch.save(payload, handle), durable=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no code is executed)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {str(path)!r}") from None
    except Exception as exc:
        raise ConfigError(f"checkpoint {str(path)!r} is unreadable or corrupt: {exc}") from None
