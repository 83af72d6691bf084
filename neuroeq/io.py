"""Writing results without losing any: atomic writes (temp file + rename), no silent
overwrites, errors that name the file asked for (never a temporary), text as UTF-8.

Text from the command line or a path may hold bytes the locale could not decode: Python
reads them as lone surrogates (``é`` typed in a UTF-8 terminal under ``LC_ALL=C``, a Latin-1
byte under a UTF-8 locale). Written text holds them as the UTF-8 text those bytes spell
(what the user typed), bytes that are not UTF-8 as ``\\xNN`` (:func:`utf8_text`): every text
file stays UTF-8. NetCDF files are written and read in such folders too (the NetCDF library
takes only names the locale's encoding encodes)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from neuroeq.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr


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


def utf8_text(text: str) -> str:
    """``text`` as a UTF-8 file holds it: lone surrogates (bytes the locale could not decode,
    as Python reads them from the command line and from paths) as the UTF-8 text those
    bytes spell, bytes that are not UTF-8 as ``\\xNN`` (any other lone surrogate as
    ``\\udNNN``). Text without surrogates is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no undecodable byte stands for (U+D800...)
        data = b"".join(_undecoded_byte(char) for char in text)
    return data.decode("utf-8", "backslashreplace")


def _undecoded_byte(char: str) -> bytes:
    try:
        return char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return char.encode("utf-8", "backslashreplace")


def utf8_data(value: Any) -> Any:
    """``value`` (plain data: tables, lists, text) with every string, key or value, as
    :func:`utf8_text` writes it."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, Mapping):
        return {utf8_data(key): utf8_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(utf8_data(item) for item in value)
    return value


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an atomic write: ``.NAME.XXXXXXXX.tmp``
    (:func:`write_file` and the writers built on it: checkpoints, figures, NetCDF files
    under a name with ``_`` for what is not ASCII), ``.NAME.PID.tmp`` (a checkpoint of an
    earlier version) or ``.STEM.tmp.png`` (a figure of an earlier version). A writer killed
    mid-write leaves one behind."""
    return name.startswith(".") and name.endswith((".tmp", ".tmp.png"))


def _temporary_sibling(path: Path, *, ascii_name: bool = False) -> Path:
    """An empty file next to ``path`` with the usual permissions (umask honoured);
    ``ascii_name``: named in ASCII (what is not becomes ``_``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if ascii_name:
        name = "".join(c if c.isascii() and c.isprintable() else "_" for c in name)
    handle, name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
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
def _atomic(path: str | os.PathLike, *, durable: bool = False, ascii_name: bool = False
            ) -> Iterator[Path]:
    """A temporary next to ``path`` to write, renamed onto ``path`` when the block ends
    (removed if it fails, whatever the error); ``durable``: its data reach the disk
    (``fsync``) before the rename; ``ascii_name``: the temporary's own name is ASCII. An
    ``OSError`` names ``path``, never the temporary."""
    path, temporary = Path(path), None
    try:
        temporary = _temporary_sibling(path, ascii_name=ascii_name)
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
    """Write text atomically, as UTF-8 (whatever the locale; undecoded bytes as
    :func:`utf8_text` writes them)."""
    with _atomic(path) as temporary:
        temporary.write_text(utf8_text(text), encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with _atomic(path) as temporary:
        temporary.write_bytes(data)


def write_netcdf(dataset: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a dataset as NetCDF atomically (its text attributes as :func:`utf8_text`
    writes them), also into a folder whose name the locale cannot encode."""
    with _atomic(path, ascii_name=True) as temporary, _netcdf_name(temporary, path) as name:
        try:
            _utf8_attrs(dataset).to_netcdf(name)
        except RuntimeError as error:  # the NetCDF library's own ("NetCDF: HDF error")
            raise OSError(errno.EIO, f"writing NetCDF failed ({error}; is the disk full?)",
                          str(path)) from error


def read_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """The dataset of the NetCDF file ``path``, loaded into memory (the file is closed),
    also from a folder whose name the locale cannot encode."""
    import xarray as xr

    with _netcdf_name(Path(path), path) as name, xr.open_dataset(name) as opened:
        return opened.load()


@contextmanager
def _netcdf_name(file: Path, path: str | os.PathLike) -> Iterator[str]:
    """A name the NetCDF library opens ``file`` by. It encodes names strictly in the file
    system's encoding (ASCII under ``LC_ALL=C``): a file in a folder it cannot encode (or
    one holding undecoded bytes) is reached through a link of an ASCII name in the
    temporary folder, to the folder (or, for a file of such a name, to the file: only
    read so, as :func:`write_netcdf` writes a temporary of an ASCII name), removed
    afterwards. Errors name ``path``."""
    encoding = sys.getfilesystemencoding()
    if _encodes(str(file), encoding):
        yield str(file)
        return
    why = f"the NetCDF library cannot encode its name in the locale's encoding ({encoding})"
    try:
        links = tempfile.mkdtemp(prefix="neuroeq-netcdf-")
    except OSError as error:
        raise OSError(error.errno, f"{why}, and making a link to it failed "
                      f"({error.strerror or error})", str(path)) from error
    try:
        folder = _encodes(file.name, encoding)
        link = os.path.join(links, "folder" if folder else f"file{file.suffix}")
        if not _encodes(link, encoding):
            raise OSError(errno.EINVAL, f"{why}, nor that of the temporary folder {links!r} "
                          "(set TMPDIR to a folder with an ASCII name)", str(path))
        try:
            os.symlink(file.parent.absolute() if folder else file.absolute(), link,
                       target_is_directory=folder)
        except OSError as error:
            raise OSError(error.errno, f"{why}, and making a link to it failed "
                          f"({error.strerror or error})", str(path)) from error
        yield os.path.join(link, file.name) if folder else link
    finally:
        shutil.rmtree(links, ignore_errors=True)  # the link, never what it names


def _encodes(name: str, encoding: str) -> bool:
    try:
        name.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


def _utf8_attrs(dataset: xr.Dataset) -> xr.Dataset:
    """``dataset``, or a shallow copy of it whose text attributes hold no lone surrogates
    (the NetCDF library encodes them as strict UTF-8)."""
    def undecoded(attrs: Mapping[Any, Any]) -> bool:
        return any(isinstance(value, str) and utf8_text(value) != value
                   for value in attrs.values())

    if not undecoded(dataset.attrs) and not any(undecoded(variable.attrs)
                                                for variable in dataset.variables.values()):
        return dataset
    copy = dataset.copy(deep=False)
    for attrs in (copy.attrs, *(variable.attrs for variable in copy.variables.values())):
        attrs.update({key: utf8_text(value) for key, value in attrs.items()
                      if isinstance(value, str)})
    return copy


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
