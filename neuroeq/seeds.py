"""Seeds: every seed neuroeq takes is a whole number, checked where it is given."""

from __future__ import annotations

from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError


def check_seed(seed: object, where: str = "seed") -> int:
    """``seed`` as an ``int``; a :class:`ConfigError` naming ``where`` for anything that is
    not a whole number (a string, ``1.5``, ``True``)."""
    if isinstance(seed, float):  # (whole_number takes 3.0; a seed must be an integer)
        raise ConfigError(f"{where} must be a whole number, got {seed!r}")
    return whole_number(seed, where)
