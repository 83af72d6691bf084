"""Writing results without losing any: atomic writes (temp file + rename), no silent
overwrites."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

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
    exists and ``force`` is not set, it is a folder, or a parent of it is a file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder; give the name of a file to write")
    if path.exists() and not force:
        raise ConfigError(f"{str(path)!r} exists; pass --force to overwrite it")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"cannot write {str(path)!r}: {str(parent)!r} is a file, not a "
                          "folder")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an atomic write: ``.NAME.XXXXXXXX.tmp``
    (:func:`write_text`, :func:`write_netcdf`), ``.NAME.PID.tmp`` (a checkpoint) or
    ``.STEM.tmp.png`` (a figure). A writer killed mid-write leaves one behind."""
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


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    path = Path(path)
    temporary = _temporary_sibling(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    path = Path(path)
    temporary = _temporary_sibling(path)
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_netcdf(dataset: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a dataset as NetCDF atomically."""
    path = Path(path)
    temporary = _temporary_sibling(path)
    try:
        try:
            dataset.to_netcdf(temporary)
        except RuntimeError as error:  # the NetCDF library's own ("NetCDF: HDF error")
            raise OSError(errno.EIO, f"writing NetCDF failed ({error}; is the disk full?)",
                          str(path)) from error
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
