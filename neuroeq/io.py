"""Writing results without losing any: atomic writes (temp file + rename), no silent
overwrites, errors that name the file asked for (never a temporary), text as UTF-8."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import xarray as xr

from neuroeq.errors import ConfigError


def software_attrs() -> dict[str, str | int]:
    """What every dataset records about the software that made it: neuroeq's and torch's
    versions and torch's CPU thread count (results are bit-for-bit reproducible at one)."""
    import torch

    from neuroeq import __version__

    return {"neuroeq_version": __version__, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def refuse_overwrite(path: str | os.PathLike, force: bool) -> None:
    """Raise, before anything is computed, if the file ``path`` could not be written: it
    exists and ``force`` is not set, it is a folder, a parent of it is a file, or this user
    may not create files in the nearest folder of it that exists."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder; give the name of a file to write")
    if path.exists() and not force:
        raise ConfigError(f"{str(path)!r} exists; pass --force to overwrite it")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None:
        return
    if not parent.is_dir():
        raise ConfigError(f"cannot write {str(path)!r}: {str(parent)!r} is a file, not a "
                          "folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {str(path)!r}: no permission to create files in "
                          f"the folder {str(parent)!r}")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an atomic write: ``.NAME.XXXXXXXX.tmp``
    (:func:`write_file` and the writers built on it, checkpoints included),
    ``.NAME.PID.tmp`` (a checkpoint of an earlier version) or ``.STEM.tmp.png`` (a figure).
    A writer killed mid-write leaves one behind."""
    return name.startswith(".") and name.endswith((".tmp", ".tmp.png"))


def _temporary_sibling(path: Path) -> Path:
    """An empty file next to ``path`` with the usual permissions (umask honoured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def _cannot_write(path: Path, error: OSError) -> OSError:
    """``error`` (about ``path``'s temporary, say) as an error naming ``path`` itself; an
    error that already names ``path`` is returned as it is."""
    if error.filename == str(path):
        return error
    return _os_error(error.errno, f"cannot write {str(path)!r}: {error.strerror or error}")


def _os_error(number: int | None, message: str) -> OSError:
    """An ``OSError`` of the subclass ``number`` gives (``PermissionError`` for ``EACCES``)."""
    return OSError(message) if number is None else OSError(number, message)


@contextmanager
def _atomic(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """A temporary next to ``path`` to write, renamed onto ``path`` when the block ends
    (removed if it fails, whatever the error); ``durable``: its data reach the disk
    (``fsync``) before the rename. An ``OSError`` names ``path``, never the temporary."""
    path, temporary = Path(path), None
    try:
        temporary = _temporary_sibling(path)
        yield temporary
        if durable:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        renamed = _cannot_write(path, error)
        if renamed is error:
            raise
        raise renamed from error
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
               durable: bool = False) -> None:
    """Write ``path`` atomically with ``write(handle)`` (a file open for binary writing);
    ``durable``: synced to disk before it replaces ``path`` (a checkpoint). If ``write``
    raises, ``path`` is left as it was and no temporary remains."""
    with _atomic(path, durable=durable) as temporary, open(temporary, "wb") as handle:
        write(handle)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically, as UTF-8 (whatever the locale)."""
    with _atomic(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with _atomic(path) as temporary:
        temporary.write_bytes(data)


def write_netcdf(dataset: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a dataset as NetCDF atomically."""
    with _atomic(path) as temporary:
        try:
            dataset.to_netcdf(temporary)
        except RuntimeError as error:  # the NetCDF library's own ("NetCDF: HDF error")
            raise OSError(errno.EIO, f"writing NetCDF failed ({error}; is the disk full?)",
                          str(path)) from error


def write_outputs(writers: Mapping[Path, Callable[[Path], None]],
                  report: Callable[[str], None] = print) -> None:
    """Call each writer on its path and ``report`` ``"wrote PATH"``; one that fails does not
    stop the others: the failures are raised together, as one ``OSError``, at the end."""
    failures: list[OSError] = []
    for path, write in writers.items():
        try:
            write(path)
        except OSError as error:
            failures.append(error)
        else:
            report(f"wrote {path}")
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise _os_error(failures[0].errno, "; ".join(_described(f) for f in failures))


def _described(error: OSError) -> str:
    """``error`` as the command line shows it: its reason and the file it names."""
    where = f": {error.filename!r}" if error.filename else ""
    return f"{error.strerror or error}{where}"
