"""One run at a time per result folder: an exclusive, advisory lock on ``OUT/.lock``.

Two runs started into one folder would otherwise both write there (the second's protocol
beside the first's datasets, their logs interleaved). The lock is ``flock`` on a file in
the folder, released when the run ends or its process dies (a killed run leaves no stale
lock); on systems without ``fcntl`` runs are not locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neuroeq.errors import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_FILE = ".lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the lock of the existing folder ``out`` for the ``with`` block; a
    :class:`ConfigError` at once when another run holds it."""
    if fcntl is None:
        yield
        return
    path = out / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another run is writing to {str(out)!r} (it holds "
                              f"{LOCK_FILE}); wait for it to finish, or give --out another "
                              "folder") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(handle)


def is_locked(out: Path) -> bool:
    """Whether a run holds the lock of ``out`` now (without taking it)."""
    if fcntl is None or not (out / LOCK_FILE).is_file():
        return False
    handle = os.open(out / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)
