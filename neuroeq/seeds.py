"""Seeds: every seed neuroeq takes is a whole number, checked where it is given."""

from __future__ import annotations

from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError

#: the largest seed (numpy's and every derived stream's bound: a training run seeds epoch
#: ``k`` with ``seed·1_000_003 + k``, which must fit torch's 64-bit seeds)
MAX_SEED = 2**32 - 1


def check_seed(seed: object, where: str = "seed") -> int:
    """``seed`` as an ``int`` in ``[0, MAX_SEED]``; a :class:`ConfigError` naming ``where``
    for anything else (a string, ``1.5``, ``True``, ``-1``, ``2**40``)."""
    if isinstance(seed, float):  # (whole_number takes 3.0; a seed must be an integer)
        raise ConfigError(f"{where} must be a whole number, got {seed!r}")
    value = whole_number(seed, where, 0)
    if value > MAX_SEED:
        raise ConfigError(f"{where} must be at most {MAX_SEED:,} (2^32 - 1), got {value:,}")
    return value
