"""Running a protocol: config in, result folder out.

Every run writes ``protocol.toml`` (the resolved configuration), ``log.txt``, its datasets
(NetCDF) and figures (PNG) into one folder. An existing folder is refused unless
``force`` (start again) or ``resume`` (training continues from its checkpoint) is given.
``force`` keeps the folder it replaces beside the new one (``NAME.previous``) until the new
run is done: a run that fails leaves the results it was to replace where they can be found,
and a ``force`` that would have to discard results before it is done is refused. A
``resume`` that fails before it wrote a new result (in training: a checkpoint) puts back
the protocol, done marker and metrics it had rewritten. Temporaries that a killed run
left are removed by the next run that finishes in the folder.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import torch

from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError
from neuroeq.io import utf8_text, write_text
from neuroeq.protocols.folder_lock import folder_lock
from neuroeq.protocols.kinds import RUNNERS
from neuroeq.protocols.loader import Protocol
from neuroeq.protocols.result_folder import (
    DONE_MARKER,
    PROTOCOL_HEADER,
    REPLACES_MARKER,
    check_output_folder,
    check_resumable_folder,
    check_set_aside,
    folder_state,
    holds_results,
    previous_path,
    remove_temporaries,
    restore_folder,
    result_path,
    set_aside,
)

MAX_THREADS_PER_CORE = 4


def default_output_dir(protocol: Protocol) -> Path:
    return Path("results") / protocol.name


def run_protocol(protocol: Protocol, out_dir: str | Path | None = None, *, force: bool = False,
                 resume: bool = False, progress: bool = True, threads: int | None = None
                 ) -> Path:
    """Run ``protocol`` and return its result folder (see the module docstring).

    ``threads``: torch's intra-op CPU threads for the run (restored afterwards; ``None``
    keeps the process's setting). The count is logged and written into every dataset
    (``torch_threads``): results are bit-for-bit reproducible at one count, not across
    counts (parallel reductions add in another order)."""
    if force and resume:
        raise ConfigError("force (start again) and resume (continue) exclude each other")
    threads = None if threads is None else whole_number(threads, "threads", 1)
    if threads is not None and threads > MAX_THREADS_PER_CORE * (os.cpu_count() or 1):
        raise ConfigError(f"{threads} torch threads on {os.cpu_count()} cores: at most "
                          f"{MAX_THREADS_PER_CORE} per core (one per core is fastest)")
    out = result_path(Path(out_dir) if out_dir is not None else default_output_dir(protocol))
    if resume and protocol.kind != "train":
        raise ConfigError(f"--resume applies to training protocols, not kind "
                          f"{protocol.kind!r} (use --force to run again)")
    check_output_folder(out)  # the plain refusals, before anything is made
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # held while the folder is checked, set aside and written
        check_output_folder(out, lock_held=True)
        if resume and not holds_results(out):
            raise ConfigError(f"nothing to resume in {str(out)!r}: it holds no training run; "
                              "run without --resume to start one")
        kept = previous_path(out)  # what an interrupted --force run set aside
        if holds_results(out):
            if not (force or resume):
                raise ConfigError(
                    f"result folder {str(out)!r} exists; pass --force to replace it or "
                    "--resume to continue a training run" + (
                        f" (the results an interrupted --force run was to replace are in "
                        f"{str(kept)!r})" if kept is not None and kept.is_dir() else ""))
            if resume:
                check_resumable_folder(protocol, out)
        if force:
            check_set_aside(out)
        previous, notes = _take_folder(out, kept, force=force, resume=resume)
        before = folder_state(out) if resume else None
        try:
            _run_in(protocol, out, previous, resume=resume, progress=progress,
                    threads=threads, notes=notes)
        except BaseException as exc:  # a resume that trained nothing: the folder as it was
            if before is not None:
                restore_folder(out, before, refused=isinstance(exc, ConfigError))
            raise
        if previous is not None:
            shutil.rmtree(previous)
            (out / REPLACES_MARKER).unlink(missing_ok=True)
        remove_temporaries(out)  # (a killed run's; this run's own are gone)
    return out


def _take_folder(out: Path, kept: Path | None, *, force: bool, resume: bool
                 ) -> tuple[Path | None, tuple[str, ...]]:
    """Make ``out`` ready for the run (under its lock, after every check): set it aside for
    ``force``, mark what a ``force`` run replaces. Returns the folder the run removes once
    done (``None``: none) and the notes the run says as warnings."""
    previous = set_aside(out) if force else None
    out.mkdir(exist_ok=True)
    marker = out / REPLACES_MARKER
    if previous is not None:  # a resume of this run completes the replacement
        write_text(marker, f"{previous.name}\n")
    elif resume and kept is not None and kept.is_dir() and marker.exists():
        previous = kept  # the run an interrupted --force started: once done, kept goes
    elif not resume:  # another run takes the folder: the kept results are not its own
        marker.unlink(missing_ok=True)
    if previous is None and kept is not None and kept.is_dir():
        return None, (f"the results an interrupted --force run was to replace stay in "
                      f"{str(kept)!r} (this run does not remove them, and a --force over "
                      "its results is refused until they are moved or removed)",)
    return previous, ()


def _run_in(protocol: Protocol, out: Path, previous: Path | None, *, resume: bool,
            progress: bool, threads: int | None, notes: tuple[str, ...] = ()) -> None:
    """The run itself, in the folder ``out`` this process holds: the resolved protocol and
    the log first, the results, then the done marker. ``notes``: said as warnings, on
    screen and in the log."""
    (out / DONE_MARKER).unlink(missing_ok=True)
    write_text(out / "protocol.toml", f"{PROTOCOL_HEADER}{protocol.source}\n"
                                      + protocol.to_toml())
    log = _logger(out)
    log.info("protocol %s (kind %s) from %s", protocol.name, protocol.kind, protocol.source)
    for note in notes:
        log.warning(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)
    threads_before = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
            if threads > (os.cpu_count() or threads):
                message = (f"{threads} torch threads on {os.cpu_count()} cores: threads "
                           "that wait for each other slow a relaxation's small products down")
                log.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.info("%s", _environment())
        RUNNERS[protocol.kind](protocol, out, log, resume=resume, progress=progress)
    except BaseException as exc:  # Ctrl+C too: the log says where the old results are
        log.error("failed: %s: %s", type(exc).__name__, exc)
        if previous is not None:
            kept = f"the results this run was to replace are kept in {str(previous)!r}"
            log.error(kept)
            exc.add_note(kept)
        raise
    finally:
        torch.set_num_threads(threads_before)
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
    seconds = time.perf_counter() - started
    write_text(out / DONE_MARKER, f"{seconds:.1f} s\n")
    with open(out / "log.txt", "a", encoding="utf-8") as handle:
        handle.write(f"done in {seconds:.1f} s\n")


def _logger(out: Path) -> logging.Logger:
    """A logger writing to ``out/log.txt``, of this run alone: not registered with
    ``logging`` (a sweep would otherwise keep one logger per point for good)."""
    log = logging.Logger(f"neuroeq.run.{out.resolve()}", logging.INFO)
    handler = logging.FileHandler(out / "log.txt", encoding="utf-8")
    handler.setFormatter(_Utf8Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


class _Utf8Formatter(logging.Formatter):
    """Log lines as :func:`~neuroeq.io.write_text` writes text: a path or argument holding
    bytes the locale could not decode is logged as the UTF-8 text they spell (a strict
    UTF-8 handler dropped the line with a "Logging error" traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return utf8_text(super().format(record))


def _environment() -> str:
    """One log line: what the numbers of this run depend on beyond its protocol."""
    from neuroeq import __version__

    return (f"neuroeq {__version__}, torch {torch.__version__} with "
            f"{torch.get_num_threads()} CPU thread(s), Python {platform.python_version()}, "
            f"{platform.machine()} ({os.cpu_count()} cores)")
