"""One run at a time per result folder: an exclusive, advisory lock on ``.OUT.lock``.

Two runs started into one folder would otherwise both write there (the second's protocol
beside the first's datasets, their logs interleaved), and two ``force`` runs would both
set the old results aside. The lock is ``flock`` on a file beside the folder (outside it,
so that a ``force`` run holds it while it moves the folder away), released and removed
when the run ends; a run whose process dies (even by SIGKILL) leaves the file, unlocked
(the kernel releases ``flock``), and the next run takes it. On systems without
``fcntl`` runs are not locked.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neuroeq.errors import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

#: the lock file inside a result folder of earlier versions (ignored where found)
LOCK_FILE = ".lock"
LOCK_SUFFIX = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}


def lock_path(out: Path) -> Path:
    """The lock file of the result folder ``out``: ``.NAME.lock`` beside it (beside the
    folder a link points to, so that every path to one folder shares one lock)."""
    out = Path(out).resolve()
    return out.with_name(f".{out.name}{LOCK_SUFFIX}")


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the lock of the result folder ``out`` (whose parent exists) for the ``with``
    block; a :class:`ConfigError` at once when another run holds it."""
    if fcntl is None:
        yield
        return
    path = lock_path(out)
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a parent folder this user cannot write to
            raise ConfigError(f"cannot make the run lock {str(path)!r} beside the result "
                              f"folder ({error.strerror}): runs need to write into the "
                              "folder that holds their result folder") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ConfigError(f"another run is writing to {str(out)!r} (it holds "
                              f"{str(path)!r}); wait for it to finish, or give --out another "
                              "folder") from None
        except OSError as error:  # a file system without locks (some network mounts)
            os.close(handle)
            if error.errno not in _NO_LOCKS:
                raise
            yield
            return
        if _same_file(handle, path):
            break
        # the run that held it removed the file after we opened it: lock the new one
        os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while locked: a run that opened it retries
        os.close(handle)


def _same_file(handle: int, path: Path) -> bool:
    """Whether the open ``handle`` is still the file at ``path`` (not one removed since)."""
    try:
        return os.fstat(handle).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def is_locked(out: Path) -> bool:
    """Whether a run holds the lock of ``out`` now (without taking it)."""
    path = lock_path(out)
    if fcntl is None or not path.is_file():
        return False
    try:
        handle = os.open(path, os.O_RDWR)
    except OSError:  # removed in the meantime, or not ours to open
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system
        return False
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)
