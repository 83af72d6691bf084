"""Checks of the numbers a user gives (step counts, step sizes, tolerances, thresholds).

Each returns the value as the type the code uses and raises a :class:`ConfigError` that
names the setting and the value for anything else: a string (``"10"``), a bool (``True``
is not a count), a fraction where a count is needed (``2.5`` steps), NaN or infinity.
"""

from __future__ import annotations

import cmath
import difflib
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from neuroeq.errors import ConfigError

#: one plain folder name: no path separators, not ``.`` or ``..``, no leading ``.`` or ``-``
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def whole_number(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (a float with a whole value, ``10.0``, passes)."""
    bound = "" if minimum is None else f" of at least {minimum}"
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or (minimum is not None and value < minimum):
        raise ConfigError(f"{name} must be a whole number{bound}, got {value!r}")
    return int(value)


def real_number(value: object, name: str) -> float:
    """``value`` as a finite ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def fraction(value: object, name: str) -> float:
    """``value`` as a ``float`` in ``[0, 1]``; a zero-dimensional tensor or array gives its
    value (a string, a bool, ``None`` or NaN is refused)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def flag(value: object, name: str) -> bool:
    """``value`` as a ``bool``: ``True``, ``False`` or a numpy bool. Anything else is refused,
    a string above all (``bool("False")`` is ``True``), and ``0``/``1`` and ``None``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def available_device(value: object, name: str = "device") -> torch.device:
    """``value`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device` or an
    accelerator index) as a :class:`torch.device` that this machine has: a
    :class:`ConfigError` naming ``name`` for a string torch does not read as a device
    (``"gpu"``) or a device that is not available (``"cuda"`` without a CUDA GPU)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, torch.device)):
        raise ConfigError(f"{name} must be a device such as 'cpu' or 'cuda', got {value!r}")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as error:
        if isinstance(value, str):
            raise ConfigError(f"{name} {value!r} is not a torch device name; use 'cpu', "
                              "'cuda' or 'cuda:N'") from error
        raise ConfigError(f"{name} {value!r} is not available: {error}") from error
    if device.type == "cuda":
        _check_cuda(device, value, name)
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError, NotImplementedError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(f"{name} {value!r} is not available on this machine "
                              f"({reason}); use 'cpu'") from error
    return device


def _check_cuda(device: torch.device, value: object, name: str) -> None:
    """Refuse a CUDA ``device`` without a CUDA GPU, or with an index past the last one."""
    if not torch.cuda.is_available():
        raise ConfigError(f"{name} {value!r} is not available: torch finds no CUDA GPU "
                          "(torch.cuda.is_available() is False); use 'cpu'")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{name} {value!r} is not available: this machine has {count} "
                          f"CUDA device(s), 'cuda:0' to 'cuda:{count - 1}'")


def nudge_strength(value: object, name: str = "beta") -> float | complex:
    """A nudge ``β``: a finite real (or, for holomorphic EP, complex) number; a
    zero-dimensional tensor or array gives its value."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Number) \
            or not cmath.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return value


def within_dtype(value: object, name: str, dtype: torch.dtype, detail: str = ""
                 ) -> float | complex:
    """``value`` (a real or complex number) unless it is NaN, infinite or larger in
    magnitude than ``dtype`` holds (``torch.finfo(dtype).max``): a :class:`ConfigError`
    naming ``name``, the value and that limit. ``detail`` follows the value (``" for 'W1'"``)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Number) \
            or cmath.isnan(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    largest = torch.finfo(dtype).max
    if not abs(value) <= largest:
        raise ConfigError(f"{name} {value:g}{detail} is beyond the range of the network's "
                          f"{str(dtype).removeprefix('torch.')} ({largest:.3g})")
    return value


def positive_number(value: object, name: str, unit: str = "") -> float:
    """``value`` as a finite ``float`` > 0 (``unit`` is named in the message: ``"seconds"``)."""
    what = f"a positive number of {unit}" if unit else "a positive number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return float(value)


def nonnegative_number(value: object, name: str) -> float:
    """``value`` as a finite ``float`` ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def folder_name(value: object, name: str) -> str:
    """``value`` as one plain folder name (letters, digits, ``.``, ``_``, ``-``; not starting
    with ``.`` or ``-``), so that a name can neither leave the folder it is made in nor
    name that folder itself (``.``, ``..``, ``""``, ``a/b``, an absolute path)."""
    if not isinstance(value, str) or not FOLDER_NAME.fullmatch(value):
        raise ConfigError(f"{name} {value!r} must be a plain folder name (letters, digits, "
                          "'.', '_', '-'; not starting with '.' or '-')")
    return value


def distinct_paths(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse two of ``paths`` (option -> path, e.g. ``{"--out": a, "--markdown": b}``;
    ``None`` is skipped) that name one file, compared resolved (``a.nc``, ``./x/../a.nc``
    and a link to it are one): the second written would replace the first."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        same = next((other for known, other in seen.items() if known == resolved
                     or (known.exists() and resolved.exists()
                         and os.path.samefile(known, resolved))), None)
        if same is not None:
            raise ConfigError(f"{same} and {option} name the same file {str(path)!r}; give "
                              "each its own path (one would overwrite the other)")
        seen[resolved] = option


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'centered'?)"`` for the known name closest to a misspelt ``name``,
    or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
