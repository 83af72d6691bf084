"""A protocol's result folder: what marks one that a run wrote, whether it holds results,
setting it aside for a ``force`` run, and whether a ``resume`` may continue it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from neuroeq.errors import ConfigError
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


def seconds_taken(out: Path) -> float:
    """How long the finished run in ``out`` took, from its done marker; NaN if unknown."""
    try:
        return float((out / DONE_MARKER).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def holds_results(out: Path) -> bool:
    """Whether ``out`` holds anything but a run's own log and protocol (a run that failed
    before writing a result leaves only those, and a new run may take the folder)."""
    return out.is_dir() and any(entry.name not in RESULT_FILES for entry in out.iterdir())


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
    entries = sorted(e.name for e in out.iterdir() if e.name != LOCK_FILE) \
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


def set_aside(out: Path) -> Path | None:
    """Move what ``out`` holds to ``NAME.previous`` for a ``force`` run, which removes it
    once the new run is done; ``None`` when there is nothing to keep (a folder with only a
    failed attempt's log and protocol is removed). A folder without the
    done marker beside a kept one is a failed attempt at replacing it: it is removed, and
    the kept results stay (until a run is done)."""
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise ConfigError(f"--force would replace {str(out)!r}, which holds the current "
                          "directory; give --out a folder of its own")
    previous = previous_path(out)  # (never None: '.' holds the cwd, result_path resolves '..')
    if not holds_results(out):  # nothing, or a failed attempt's log and protocol only
        if out.is_dir():
            shutil.rmtree(out)
        return previous if previous.exists() else None
    if previous.exists():
        if not (out / DONE_MARKER).exists():
            shutil.rmtree(out)
            return previous
        shutil.rmtree(previous)
    out.rename(previous)
    return previous


def check_resumable_folder(protocol: Protocol, out: Path) -> None:
    """``--resume`` continues the run in ``out`` as it was made: the protocol may differ
    from the folder's ``protocol.toml`` only in :data:`RESUMABLE_CHANGES` and
    ``[outputs]``; anything else would leave a folder whose protocol does not describe its
    results. The checkpoint's own checks (:func:`neuroeq.training.check_resumable`) run
    here too, before the folder is touched."""
    saved_path = out / "protocol.toml"
    if not saved_path.is_file():
        return
    changed = changed_settings(load_protocol(saved_path).config, protocol.config,
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
