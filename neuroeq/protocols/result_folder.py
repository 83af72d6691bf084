"""A protocol's result folder: what marks one that a run wrote, whether it holds results,
setting it aside for a ``force`` run, whether a ``resume`` may continue it, and putting
back what a ``resume`` that failed before it trained had rewritten."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuroeq.errors import ConfigError
from neuroeq.io import is_temporary, utf8_data, write_bytes
from neuroeq.protocols import build
from neuroeq.protocols.folder_lock import LOCK_FILE, is_locked
from neuroeq.protocols.loader import Protocol, load_protocol

#: in a ``force`` run's folder while the results it replaces wait in ``NAME.previous``: a
#: ``resume`` that completes this run removes them, a ``resume`` of another run does not
REPLACES_MARKER = "REPLACES"
RESULT_FILES = ("protocol.toml", "log.txt", LOCK_FILE, REPLACES_MARKER)
#: the first line of the ``protocol.toml`` a run writes (then the file it was resolved from)
PROTOCOL_HEADER = "# resolved from "
#: settings a resumed run may change (and every key of [outputs]): how long it trains, and
#: what does not change what it learns (where the data files lie, how often it checkpoints)
RESUMABLE_CHANGES = {("training", "epochs"), ("training", "checkpoint_every"),
                     ("training", "eval_every"), ("training", "eval_batch_size"),
                     ("data", "root"), ("protocol", "description")}
DONE_MARKER = "DONE"
PREVIOUS_SUFFIX = ".previous"
#: what a resumed run rewrites before it trains an epoch: its protocol and done marker at
#: the start, ``metrics.nc`` when training stops with an error (the same epochs again)
RESUME_REWRITES = ("protocol.toml", DONE_MARKER, "metrics.nc")


def seconds_taken(out: Path) -> float:
    """How long the finished run in ``out`` took, from its done marker; NaN if unknown."""
    try:
        return float((out / DONE_MARKER).read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def holds_results(out: Path) -> bool:
    """Whether ``out`` holds anything but a run's own log and protocol (a run that failed
    before writing a result leaves only those, and a new run may take the folder)."""
    return out.is_dir() and any(entry.name not in RESULT_FILES and not is_temporary(entry.name)
                                for entry in out.iterdir())


def remove_temporaries(out: Path) -> None:
    """Remove the temporaries (:func:`~neuroeq.io.is_temporary`) under ``out``: what writers
    killed mid-write left. Only for the run that holds the folder's lock (no other writes
    there)."""
    for path in sorted(out.rglob(".*")) if out.is_dir() else []:
        if is_temporary(path.name) and path.is_file():
            path.unlink(missing_ok=True)


def result_path(out: Path) -> Path:
    """The folder a run writes to: ``out``, or the folder it links to (``--force`` sets the
    folder aside and makes a new one, which must be the link's target, not the link); a
    link to nothing is refused. A path through ``..`` is the folder it names (``y/../y``
    would not exist once ``force`` moved ``y`` aside)."""
    if ".." in out.parts:
        out = out.resolve()
    if not out.is_symlink():
        return out
    target = out.resolve()
    if not target.exists():
        raise ConfigError(f"the result folder {str(out)!r} is a link to {str(target)!r}, "
                          "which does not exist; make that folder or give --out another one")
    return target


def check_output_folder(out: Path, *, lock_held: bool = False) -> None:
    """Refuse an ``out`` that is a file, a folder another run is writing to (unless this
    process holds its lock: ``lock_held``), or a folder of files no run wrote (which
    ``force`` would delete): a run folder starts with the ``protocol.toml`` it wrote."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the result folder {str(out)!r} is a file; give --out a folder")
    if out.name.endswith(PREVIOUS_SUFFIX):  # --force of NAME would take it for its own
        raise ConfigError(f"the result folder {str(out)!r} ends in {PREVIOUS_SUFFIX!r}, the "
                          "name a --force run gives the results it sets aside (and removes "
                          "when done); name the protocol or --out otherwise")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"cannot make the result folder {str(out)!r}: {str(parent)!r} is a "
                          "file, not a folder")
    if not lock_held and is_locked(out):
        raise ConfigError(f"another run is writing to {str(out)!r}; wait for it to finish, "
                          "or give --out another folder")
    entries = sorted(e.name for e in out.iterdir()
                     if e.name != LOCK_FILE and not is_temporary(e.name)) \
        if out.is_dir() else []
    if entries and not written_by_a_run(out):
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(f"{str(out)!r} holds files that no neuroeq run wrote ({shown}); a "
                          "run writes into a new folder or into its own result folder "
                          "(--force replaces that, --resume continues it), so give --out a "
                          "new folder")


def written_by_a_run(out: Path) -> bool:
    """Whether ``out`` starts with the ``protocol.toml`` of a run (:data:`PROTOCOL_HEADER`)."""
    try:
        with open(out / "protocol.toml", encoding="utf-8") as handle:
            return handle.readline().startswith(PROTOCOL_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def previous_path(out: Path) -> Path | None:
    """Where a ``force`` run keeps the results it replaces: ``NAME.previous`` beside
    ``out`` (``None`` for ``.`` and ``..``, which have no such sibling)."""
    return None if out.name in ("", "..") else out.with_name(out.name + PREVIOUS_SUFFIX)


def check_set_aside(out: Path) -> None:
    """Refuse a ``force`` run that would replace the current directory, or that would have
    to discard results before it is done: ``out`` holds results and ``NAME.previous``
    holds others that no finished run replaced (only one folder can be set aside)."""
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise ConfigError(f"--force would replace {str(out)!r}, which holds the current "
                          "directory; give --out a folder of its own")
    previous = previous_path(out)  # (never None: '.' holds the cwd, result_path resolves '..')
    if not previous.exists() or not holds_results(out) or replaced_by_a_finished_run(out):
        return
    discard = "--force would have to discard one of them before it is done"
    move = (f"move or remove {str(previous)!r} or {str(out)!r} yourself, or give --out "
            "another folder")
    if (out / DONE_MARKER).exists():
        raise ConfigError(f"{str(previous)!r} holds the results an earlier --force run was to "
                          f"replace, and {str(out)!r} a run finished since: {discard}; {move}")
    raise ConfigError(f"{str(out)!r} holds the results of an unfinished run, and "
                      f"{str(previous)!r} the results it was to replace: {discard}; --resume "
                      f"continues the unfinished run (a training run), or {move}")


def replaced_by_a_finished_run(out: Path) -> bool:
    """Whether ``out`` holds a finished ``force`` run that replaced ``NAME.previous`` (it
    was stopped before it removed that folder: it is due for removal)."""
    try:
        marker = (out / REPLACES_MARKER).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return (out / DONE_MARKER).is_file() and marker == previous_path(out).name


def set_aside(out: Path) -> Path | None:
    """Move what ``out`` holds to ``NAME.previous`` for a ``force`` run, which removes it
    once the new run is done (after :func:`check_set_aside`); ``None`` when there is nothing
    to keep. A folder with only a failed attempt's log and protocol is removed, and the
    results a kept ``NAME.previous`` holds stay there (until a run is done)."""
    check_set_aside(out)
    previous = previous_path(out)
    if not holds_results(out):  # nothing, or a failed attempt's log and protocol only
        if out.is_dir():
            shutil.rmtree(out)
        return previous if previous.exists() else None
    if previous.exists():  # replaced by the finished run in out: its removal was left undone
        shutil.rmtree(previous)
    out.rename(previous)
    return previous


@dataclass(frozen=True)
class FolderState:
    """A result folder before a resume: the bytes of :data:`RESUME_REWRITES` (``None``:
    absent), the log's length and every other file's identity (inode, size, mtime)."""

    rewrites: dict[str, bytes | None]
    log_size: int | None
    others: dict[str, tuple[int, int, int]]


def folder_state(out: Path) -> FolderState:
    """What :func:`restore_folder` puts back in ``out`` (a resume's folder)."""
    rewrites = {name: (out / name).read_bytes() if (out / name).is_file() else None
                for name in RESUME_REWRITES}
    log = out / "log.txt"
    return FolderState(rewrites, log.stat().st_size if log.is_file() else None,
                       _identities(out))


def restore_folder(out: Path, before: FolderState, *, refused: bool) -> bool:
    """After a resume failed: if it wrote no file beyond :data:`RESUME_REWRITES` and the log
    (no checkpoint: it trained no epoch), put those back as they were ``before``, the log
    too when the run was ``refused`` (its error is all there is to say); whether it did.
    A run that wrote more leaves its folder as an unfinished run's."""
    if _identities(out) != before.others:
        return False
    for name, data in before.rewrites.items():
        path = out / name
        if data is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_bytes() != data:
            write_bytes(path, data)
    log = out / "log.txt"
    if refused and before.log_size is None:
        log.unlink(missing_ok=True)
    elif refused and log.is_file():
        os.truncate(log, before.log_size)
    return True


def _identities(out: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``out`` but the log, :data:`RESUME_REWRITES` and temporaries: its
    inode, size and modification time (an atomic write changes the inode)."""
    skipped = {*RESUME_REWRITES, "log.txt", REPLACES_MARKER, LOCK_FILE}
    identities = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if path.is_file() and name not in skipped and not is_temporary(path.name):
            stat = path.stat()
            identities[name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return identities


def check_resumable_folder(protocol: Protocol, out: Path) -> None:
    """``--resume`` continues the run in ``out`` as it was made: the protocol may differ
    from the folder's ``protocol.toml`` only in :data:`RESUMABLE_CHANGES` and
    ``[outputs]``; anything else would leave a folder whose protocol does not describe its
    results. The checkpoint's own checks (:func:`neuroeq.training.check_resumable`) run
    here too, before the folder is touched."""
    saved_path = out / "protocol.toml"
    if not saved_path.is_file():
        return
    saved = load_protocol(saved_path)
    if saved.kind != protocol.kind:  # e.g. a gradient check's folder: no run of this kind
        raise ConfigError(f"nothing to resume in {str(out)!r}: it holds a {saved.kind!r} run "
                          f"(protocol {saved.name!r}), not a {protocol.kind!r} run; use "
                          "--force to replace it, or another --out")
    # (compared as written: text the locale could not decode as the UTF-8 text it spells)
    changed = changed_settings(saved.config, utf8_data(protocol.config),
                               ignore=RESUMABLE_CHANGES | {("outputs", None)})
    if changed:
        raise ConfigError(f"--resume continues the run in {str(out)!r} as it was made, but "
                          f"these settings differ from its protocol.toml: "
                          f"{'; '.join(changed)}. Only [outputs] and "
                          f"{', '.join(f'{a}.{b}' for a, b in sorted(RESUMABLE_CHANGES))} may "
                          "change; use --force to start again, or another --out")
    from neuroeq.training import CHECKPOINT_NAME, check_resumable, load_checkpoint

    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.is_file():  # e.g. fewer epochs than it holds: refused before any write
        check_resumable(load_checkpoint(checkpoint), build.build_train_config(protocol.config),
                        out)


def changed_settings(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]],
                     ignore: set[tuple[str, str | None]] = frozenset()) -> list[str]:
    """``section.key (old -> new)`` for every setting that differs between two resolved
    protocols; ``ignore`` holds ``(section, key)`` pairs, ``(section, None)`` a whole one."""
    changed = []
    for section in sorted(set(before) | set(now)):
        if (section, None) in ignore:
            continue
        old, new = before.get(section, {}), now.get(section, {})
        for key in sorted(set(old) | set(new)):
            if (section, key) not in ignore and old.get(key) != new.get(key):
                changed.append(f"{section}.{key} ({old.get(key)!r} -> {new.get(key)!r})")
    return changed
