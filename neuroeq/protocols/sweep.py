"""Sweeps: the points of a :class:`~neuroeq.protocols.sweep_file.Sweep` run on Dask
distributed (a ``LocalCluster`` by default, or an existing scheduler), combined into one
``xarray.Dataset`` along the sweep dimensions (the file format: :mod:`.sweep_file`).

Each point runs in ``OUT/points/<point>/`` with its own ``protocol.toml`` and log. A point
that fails is recorded with its error (``status``, ``error`` in the combined dataset) and
does not stop the others; re-running skips points already done (same resolved protocol).
``OUT/sweep.json`` records the sweep (:meth:`~neuroeq.protocols.sweep_file.Sweep.identity`):
a folder with another sweep's finished points is refused without ``force``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroeq.brian2_import import import_brian2
from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError, NeuroEQError
from neuroeq.io import is_temporary, read_netcdf, software_attrs, write_netcdf, write_text
from neuroeq.protocols.folder_lock import LOCK_FILE, folder_lock
from neuroeq.protocols.loader import load_protocol
from neuroeq.protocols.result_folder import (
    DONE_MARKER,
    changed_settings,
    result_path,
    seconds_taken,
)
from neuroeq.protocols.sweep_file import Sweep, SweepPoint, axis_labels, identity_hash

#: the dataset a finished point contributes, by protocol kind
PRIMARY_RESULT = {"train": "metrics.nc", "gradcheck": "gradcheck.nc",
                  "asymmetry": "asymmetry.nc", "stochastic": "stochastic.nc",
                  "snn_bptt": "metrics.nc"}
#: the record of the sweep a folder holds (what identifies it: :meth:`Sweep.identity`)
SWEEP_RECORD = "sweep.json"
#: what a sweep writes into its folder (anything else there is not a sweep's)
SWEEP_FILES = (SWEEP_RECORD, "sweep.nc", "failures.txt", "points", LOCK_FILE)


def run_point(config: dict[str, Any], out_dir: str, threads: int | None = None,
              replace: bool = False) -> dict[str, Any]:
    """Run one point (in a Dask worker; ``threads``: its torch CPU threads, ``None`` keeps
    the worker's); never raises: returns status, error, seconds. A finished run of other
    settings that appeared in the point's folder since the sweep started is replaced only
    with ``replace`` (the sweep's ``force``); one of the same settings is kept."""
    from neuroeq.protocols.runner import run_protocol

    started = time.perf_counter()
    folder = Path(out_dir)
    try:
        import_brian2()  # in a worker thread: without Brian2's SIGINT handler
        if _already_done(config, folder):  # another run made it meanwhile
            return {"status": "done", "error": "", "seconds": seconds_taken(folder)}
        if not replace and (why := _made_otherwise(config, folder)) is not None:
            raise ConfigError(f"{folder.name} holds a finished run made with other settings "
                              f"({why}), written after the sweep started; pass --force to "
                              "replace it")
        protocol = load_protocol(config, name=f"sweep point {folder.name}")
        run_protocol(protocol, out_dir, force=True, progress=False, threads=threads)
        return {"status": "done", "error": "", "seconds": time.perf_counter() - started}
    except Exception as exc:  # reported per point, the sweep goes on
        kind = "" if isinstance(exc, NeuroEQError) else f"{type(exc).__name__}: "
        message = f"{kind}{exc}".splitlines()[0] if str(exc) else type(exc).__name__
        return {"status": "failed", "error": message,
                "seconds": time.perf_counter() - started}


def _already_done(config: dict[str, Any], folder: Path) -> bool:
    """Whether ``folder`` holds a finished run of ``config``: its ``protocol.toml``, read
    through the schema as this version reads it, resolves to the same settings (a file an
    earlier version wrote may hold keys at their defaults that a kind no longer reads, such
    as a gradcheck's ``[outputs].state_samples``: the schema drops them)."""
    marker, stored = folder / DONE_MARKER, folder / "protocol.toml"
    if not (marker.is_file() and stored.is_file()):
        return False
    try:
        expected = load_protocol(config).to_toml()
    except NeuroEQError:
        return False
    if stored.read_text(encoding="utf-8").split("\n", 1)[-1] == expected:
        return True
    try:
        return load_protocol(stored).to_toml() == expected
    except NeuroEQError:  # (a file this version cannot read is not this run)
        return False


def _made_otherwise(config: dict[str, Any], folder: Path) -> str | None:
    """For a point folder holding a finished run of other settings: what differs (the
    first settings, for the message); ``None`` when there is no finished run there."""
    marker, stored = folder / DONE_MARKER, folder / "protocol.toml"
    if not (marker.is_file() and stored.is_file()):
        return None
    try:
        changed = changed_settings(load_protocol(stored).config, load_protocol(config).config)
    except NeuroEQError:
        changed = []
    return "; ".join(changed[:3]) or "its protocol.toml differs"


def _local_cluster(workers: int) -> Any:
    """A ``LocalCluster`` of ``workers`` one-thread processes that ignore Ctrl+C: the
    interrupt reaches this process, which stops the sweep and closes the cluster (the
    workers started with Python's own handler printed a traceback each, and their logs'
    warnings about the cancelled tasks; errors are still logged)."""
    from dask.distributed import LocalCluster

    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:  # an ignored SIGINT is inherited by the processes started now
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.ERROR)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, handler)


def run_sweep(sweep: Sweep, out_dir: str | os.PathLike | None = None, *,
              scheduler: str | None = None, workers: int = 2, threads: int | None = None,
              force: bool = False, progress: Callable[[str], None] | None = None
              ) -> xr.Dataset:
    """Run every point of ``sweep`` on Dask and return (and write ``sweep.nc``) the
    combined dataset; see the module docstring. ``threads``: torch CPU threads per point
    (``None``: the workers' own, one in a LocalCluster). A point folder that holds a
    finished run of other settings (the sweep file or its ``--set`` changed) is replaced
    only with ``force``, and so are another sweep's ``sweep.json`` and ``sweep.nc`` (a
    folder of files no sweep wrote is written into only with ``force``); without it the
    sweep is refused before anything is written. One sweep at a time writes to a folder
    (the lock of :mod:`~neuroeq.protocols.folder_lock`)."""
    threads = None if threads is None else whole_number(threads, "threads", 1)
    if scheduler is not None:
        _check_scheduler_address(scheduler)
    out = result_path(Path(out_dir) if out_dir is not None else Path("results") / sweep.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # one sweep at a time in a folder (its points lock their own)
        return _run_sweep_in(sweep, out, scheduler=scheduler, workers=workers,
                             threads=threads, force=force,
                             say=progress or (lambda text: None))


def _check_scheduler_address(address: object) -> None:
    """Refuse, before anything is written, a scheduler address Dask cannot connect to as
    written (no port, an unknown scheme): ``tcp://HOST:PORT`` and the like."""
    from distributed.comm import get_address_host_port, parse_address

    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"the scheduler address must be a text such as tcp://HOST:8786, "
                          f"got {address!r}")
    try:
        if parse_address(address)[0] != "inproc":  # (an in-process scheduler has no port)
            get_address_host_port(address)
    except ValueError as exc:
        raise ConfigError(f"scheduler address {address!r}: {exc}; give one such as "
                          "tcp://HOST:8786") from None


def _run_sweep_in(sweep: Sweep, out: Path, *, scheduler: str | None, workers: int,
                  threads: int | None, force: bool, say: Callable[[str], None]
                  ) -> xr.Dataset:
    from dask.distributed import Client, as_completed

    _check_sweep_folder(sweep, out, force=force)  # before anything is written
    points_dir = out / "points"
    points = sweep.points()
    outcome: dict[str, dict[str, Any]] = {}
    pending = []
    for point in points:
        folder = points_dir / point.name
        if _already_done(point.config, folder):
            outcome[point.name] = {"status": "done", "error": "",
                                   "seconds": seconds_taken(folder), "skipped": True}
        else:
            pending.append(point)
    if not force:
        replaced = [(point.name, why) for point in pending
                    if (why := _made_otherwise(point.config, points_dir / point.name))
                    is not None]
        if replaced:
            name, why = replaced[0]
            raise ConfigError(f"{str(out)!r} holds {len(replaced)} finished point(s) made with "
                              f"other settings ({name}: {why}); pass --force to replace "
                              "them, or give another --out")
    points_dir.mkdir(parents=True, exist_ok=True)
    write_text(out / SWEEP_RECORD, _record(sweep))
    say(f"{len(points)} points: {len(points) - len(pending)} already done, "
        f"{len(pending)} to run")
    if pending:
        cluster = None
        if scheduler is None:
            cluster = _local_cluster(workers)
        try:
            with Client(scheduler or cluster) as client:
                futures = {client.submit(run_point, point.config,
                                         # absolute: a scheduler's workers may run elsewhere
                                         str((points_dir / point.name).resolve()),
                                         threads, force,
                                         pure=False,
                                         key=f"neuroeq-{sweep.name}-{point.name}"): point
                           for point in pending}
                for future in as_completed(futures):
                    point = futures[future]
                    try:
                        result = future.result()
                    except Exception as exc:  # a worker died: report this point only
                        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "seconds": float("nan")}
                    outcome[point.name] = result
                    say(f"{point.name}: {result['status']}"
                        + (f" ({result['error']})" if result["error"] else ""))
        finally:
            if cluster is not None:
                cluster.close()
    dataset = combine_points(sweep, points, points_dir, outcome)
    if "not_combined" in dataset.attrs:
        say(f"sweep.nc holds the points' status only: {dataset.attrs['not_combined']}")
    write_netcdf(dataset, out / "sweep.nc")
    failed = [p.name for p in points if outcome[p.name]["status"] != "done"]
    write_text(out / "failures.txt", "".join(f"{name}: {outcome[name]['error']}\n"
                                             for name in failed))
    return dataset


def _check_sweep_folder(sweep: Sweep, out: Path, *, force: bool) -> None:
    """Refuse an ``out`` that is a file and, unless ``force``, a folder that holds files no
    sweep wrote or the finished points of another sweep (its ``sweep.json`` records another
    grid or base protocol): this sweep would write its ``sweep.json`` and ``sweep.nc`` over
    theirs. A sweep none of whose points finished leaves no results: another may take its
    folder. Re-running a sweep into its own folder passes (its finished points are kept)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the result folder {str(out)!r} is a file; give --out a folder")
    if force or not out.is_dir():
        return
    foreign = sorted(entry.name for entry in out.iterdir()
                     if entry.name not in SWEEP_FILES and not is_temporary(entry.name))
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise ConfigError(f"result folder {str(out)!r} holds files that no sweep wrote "
                          f"({shown}); pass --force to write the sweep into it anyway, or "
                          "give another --out")
    finished = any((out / "points").glob(f"*/{DONE_MARKER}"))
    if finished and (why := _another_sweep(sweep, out / SWEEP_RECORD)) is not None:
        raise ConfigError(f"result folder {str(out)!r} holds the results of another sweep "
                          f"({why}); pass --force to run this sweep there (its sweep.json "
                          "and sweep.nc are replaced, finished points of other settings "
                          "too), or give another --out")


def _another_sweep(sweep: Sweep, record: Path) -> str | None:
    """How the sweep recorded in ``record`` (a ``sweep.json``) differs from ``sweep``;
    ``None`` when there is no record or it is this sweep's."""
    if not record.is_file():
        return None
    stored = _read_record(record)
    if stored is None:
        return f"its {SWEEP_RECORD} is not a sweep's record"
    grid, protocol = stored["grid"], stored.get("protocol")
    if not isinstance(protocol, dict):  # a record of an earlier version: its base only
        try:
            protocol = load_protocol(stored["base"]).config
        except NeuroEQError as error:
            return f"its base protocol is no longer valid: {error}"
    ours = sweep.identity()
    theirs = stored.get("id") or identity_hash({"grid": [[k, v] for k, v in grid.items()],
                                               "protocol": protocol})
    if theirs == identity_hash(ours):
        return None
    source = f"from {stored.get('source', '?')!r}; "
    if json.dumps(grid, default=str) != json.dumps(sweep.grid, default=str):
        return (f"{source}its grid is {_grid_text(grid)}, this sweep's "
                f"{_grid_text(sweep.grid)}")
    changed = changed_settings(protocol, ours["protocol"])
    return source + ("its base protocol differs: " + "; ".join(changed[:3]) if changed
                     else "its base protocol differs")


def _read_record(record: Path) -> dict[str, Any] | None:
    """A ``sweep.json``'s content; ``None`` unless it holds a grid and a base protocol."""
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(stored, dict) and isinstance(stored.get("grid"), dict)
            and isinstance(stored.get("base"), dict)):
        return None
    return stored


def _record(sweep: Sweep) -> str:
    """The ``sweep.json`` of ``sweep``: its id (:meth:`Sweep.fingerprint`), name, source
    file, grid, base protocol as given and resolved."""
    identity = sweep.identity()
    return json.dumps({"id": identity_hash(identity), "name": sweep.name,
                       "source": sweep.source, "grid": sweep.grid, "base": sweep.base,
                       "protocol": identity["protocol"]}, indent=2, default=str)


def _grid_text(grid: Mapping[str, Any]) -> str:
    text = "; ".join(f"{key} = {json.dumps(values, default=str)}" for key, values in grid.items())
    return text if len(text) <= 200 else text[:197] + "..."


def combine_points(sweep: Sweep, points: list[SweepPoint], points_dir: Path,
                   outcome: Mapping[str, Mapping[str, Any]]) -> xr.Dataset:
    """Stack each finished point's primary dataset along the sweep dimensions; ``status``,
    ``error`` and ``seconds`` cover every point (failed ones have NaN results). A grid key
    whose short name the points' datasets already use gets its whole name
    (:meth:`Sweep.dimension_names`); list and table values become their JSON text
    (:func:`axis_labels`)."""
    kind = sweep.base.get("protocol", {}).get("kind", "train")
    finished = []
    threads = set()  # the points' torch thread counts
    for point in points:
        path = points_dir / point.name / PRIMARY_RESULT[kind]
        if outcome[point.name]["status"] == "done" and path.is_file():
            part = read_netcdf(path)
            threads.add(int(part.attrs.get("torch_threads", 0)))
            part.attrs = {}
            for variable in part.variables.values():  # NaN-padded ints become floats
                variable.encoding = {}
            finished.append((point, part))
    dims = sweep.dimension_names({str(name) for _, part in finished
                                  for name in (*part.variables, *part.dims)})
    labels = {key: axis_labels(values) for key, values in sweep.grid.items()}
    shape = tuple(len(v) for v in sweep.grid.values())
    at = dict(zip((point.name for point in points),
                  itertools.product(*(range(n) for n in shape)), strict=True))
    parts = [part.expand_dims({dims[key]: [labels[key][i]]
                               for key, i in zip(sweep.grid, at[point.name], strict=True)})
             for point, part in finished]
    coords = {dims[key]: values for key, values in labels.items()}
    status = np.empty(shape, dtype=object)
    error = np.empty(shape, dtype=object)
    seconds = np.full(shape, np.nan)
    for index, point in zip(itertools.product(*(range(n) for n in shape)), points,
                            strict=True):
        status[index] = outcome[point.name]["status"]
        error[index] = outcome[point.name]["error"]
        seconds[index] = outcome[point.name]["seconds"]
    bookkeeping = xr.Dataset({"status": (tuple(coords), status.astype(str)),
                              "error": (tuple(coords), error.astype(str)),
                              "seconds": (tuple(coords), seconds)}, coords=coords)
    unmerged = ""
    try:
        combined = (xr.combine_by_coords(parts, join="outer", combine_attrs="drop") if parts
                    else xr.Dataset())
    except (ValueError, TypeError, KeyError) as exc:  # e.g. the points' shapes differ
        combined = xr.Dataset()
        unmerged = (f"the points' {PRIMARY_RESULT[kind]} datasets do not "
                    f"combine ({' '.join(str(exc).split())[:300]}); each point's is in "
                    f"{points_dir}/<point>/")
    result = xr.merge([bookkeeping, combined], join="left", combine_attrs="drop")
    result.attrs = {"title": f"neuroeq sweep {sweep.name}", "source": sweep.source,
                    "grid": json.dumps(sweep.grid, default=str), "kind": kind,
                    **software_attrs()}
    if unmerged:
        result.attrs["not_combined"] = unmerged
    # the points ran in workers: their thread counts, not this process's
    result.attrs["torch_threads"] = (threads.pop() if len(threads) == 1
                                     else ",".join(map(str, sorted(threads))) or "none ran")
    return result
