"""Sweeps: a grid over protocol parameters, run on Dask distributed (a ``LocalCluster`` by
default, or an existing scheduler), combined into one ``xarray.Dataset`` along the sweep
dimensions.

A sweep file is a protocol file with a ``[sweep]`` table::

    [sweep]
    name = "beta_sweep"                 # result folder name (default: the file's stem)
    protocol = "train_digits.toml"      # base protocol, relative to this file; or put the
                                        # base sections ([protocol], [model], ...) inline
    [sweep.grid]                        # dotted keys -> lists of values (Cartesian product)
    "rule.beta" = [0.1, 0.5]
    "network.seed" = [0, 1]

Each point runs in ``OUT/points/<point>/`` with its own ``protocol.toml`` and log. A point
that fails is recorded with its error (``status``, ``error`` in the combined dataset) and
does not stop the others; re-running skips points already done (same resolved protocol).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neuroeq.brian2_import import import_brian2
from neuroeq.checks import did_you_mean, folder_name, whole_number
from neuroeq.errors import ConfigError, NeuroEQError
from neuroeq.io import software_attrs, write_netcdf, write_text
from neuroeq.neuron_model import load_model
from neuroeq.protocols.folder_lock import folder_lock
from neuroeq.protocols.loader import (
    apply_overrides,
    load_protocol,
    parse_override,
    read_protocol_file,
)
from neuroeq.protocols.result_folder import (
    DONE_MARKER,
    changed_settings,
    result_path,
    seconds_taken,
)
from neuroeq.protocols.schema import KEYS_READ, SCHEMA, SECTIONS_BY_KIND

#: the dataset a finished point contributes, by protocol kind
PRIMARY_RESULT = {"train": "metrics.nc", "gradcheck": "gradcheck.nc",
                  "asymmetry": "asymmetry.nc", "stochastic": "stochastic.nc",
                  "snn_bptt": "metrics.nc"}
SWEEP_KEYS = ("name", "protocol", "grid", "set")
MAX_POINTS = 10_000
#: the per-point variables of the combined dataset
BOOKKEEPING = ("status", "error", "seconds")


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its folder name, its override values and the full base config."""

    name: str
    values: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    grid: dict[str, list[Any]]
    base: dict[str, Any]

    @property
    def dims(self) -> dict[str, str]:
        """Dimension name for each grid key (its last component, unless ambiguous)."""
        return self.dimension_names()

    def dimension_names(self, taken: Collection[str] = ()) -> dict[str, str]:
        """Dimension name for each grid key: its last component (``rule.beta`` → ``beta``),
        unless two keys share it or it names a dimension or variable the points' datasets
        hold (``taken``; ``epoch`` and the bookkeeping variables always): then the whole
        key with ``_`` (``training.seed`` → ``training_seed`` beside a ``seed`` dim)."""
        last = [key.split(".")[-1] for key in self.grid]
        reserved = {"epoch", *BOOKKEEPING, *taken}
        return {key: (short if last.count(short) == 1 and short not in reserved
                      else key.replace(".", "_"))
                for key, short in zip(self.grid, last, strict=True)}

    def points(self) -> list[SweepPoint]:
        keys = list(self.grid)
        points = []
        for index, combo in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            values = dict(zip(keys, combo, strict=True))
            label = "_".join(f"{self.dims[k]}-{_label(v)}" for k, v in values.items())
            config = apply_overrides(self.base, [(k.split("."), v) for k, v in values.items()])
            points.append(SweepPoint(f"p{index:04d}_{label}"[:120], values, config))
        return points


def _label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(value)) or "x"


def coordinate(value: Any) -> Any:
    """A grid value as a coordinate label: numbers, strings and booleans as they are; a list
    or a table (``network.sizes = [[64, 8, 10], ...]``) as its compact JSON text."""
    if isinstance(value, list | Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return value


def load_sweep(path: str | os.PathLike, overrides: list[str] = ()) -> Sweep:
    """Read a sweep file (see the module docstring); ``overrides`` apply to the base."""
    path = Path(path)
    data = read_protocol_file(path)
    table = data.pop("sweep", None)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: a sweep file needs a [sweep] table with a grid")
    for key in table:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown key [sweep].{key}; known: {', '.join(SWEEP_KEYS)}")
    if "protocol" in table:
        if not isinstance(table["protocol"], str):
            raise ConfigError(f"{path}: [sweep].protocol must be a file name")
        if data:
            raise ConfigError(f"{path}: give the base protocol either as [sweep].protocol or "
                              "inline, not both")
        base_path = (path.parent / table["protocol"]).resolve()
        data = read_protocol_file(base_path)
    grid = _flatten(table.get("grid", {}), f"{path}: [sweep.grid]")
    if not grid:
        raise ConfigError(f"{path}: [sweep.grid] is empty; give at least one key = [values]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: [sweep.grid].{key} must be a non-empty list of values")
        if len(key.split(".")) < 2:
            raise ConfigError(f"{path}: [sweep.grid].{key} must be section.key, e.g. rule.beta")
        seen: set[Any] = set()
        for value in values:  # two points of one setting: one folder, one coordinate
            # true and 1 are two values (1 and 1.0 one)
            label = (isinstance(value, bool), coordinate(value))
            if label in seen:
                raise ConfigError(f"{path}: [sweep.grid].{key} lists {value!r} more than "
                                  "once; give each value once")
            seen.add(label)
    n_points = math.prod(len(v) for v in grid.values())  # (numpy's product can overflow)
    if n_points > MAX_POINTS:
        raise ConfigError(f"{path}: the grid has {n_points:,} points, more than {MAX_POINTS:,}")
    fixed = _flatten(table.get("set", {}), f"{path}: [sweep.set]")
    parsed = [parse_override(o) for o in overrides]
    for key in list(fixed) + [".".join(keys) for keys, _ in parsed]:
        if key in grid:
            raise ConfigError(f"{path}: {key} is a grid key ([sweep.grid].{key}): every point "
                              "sets its own value, so a fixed value would be ignored; change "
                              "the grid instead")
    data = apply_overrides(data, [(k.split("."), v) for k, v in fixed.items()])
    data = apply_overrides(data, parsed)
    name = folder_name(table.get("name", path.stem), f"{path}: [sweep].name")
    # the base itself must be valid (values are checked per point)
    base = load_protocol(data, name=f"{path} (its base protocol with [sweep.set] and --set)")
    _check_grid_keys(grid, base.config, path)
    sweep = Sweep(name, str(path), grid, data)
    _check_some_point_is_valid(sweep, path)
    return sweep


def _check_some_point_is_valid(sweep: Sweep, path: Path) -> None:
    """A grid whose every point is an invalid protocol (a key that only another rule or
    engine reads, say) would fail every point: it is the sweep file's error, raised before
    a cluster starts, with the first point's reason. Points that fail among valid ones
    fail on their own (their errors go to ``failures.txt``)."""
    first = None
    for point in sweep.points():
        try:
            load_protocol(point.config, name=point.name)
        except ConfigError as error:
            first = first or (point.name, error)
        else:
            return
    if first is not None:
        raise ConfigError(f"{path}: every point of [sweep.grid] is an invalid protocol, so "
                          f"every point would fail; the first, {first[1]}")


def _check_grid_keys(grid: dict[str, list[Any]], config: dict[str, Any], path: Path) -> None:
    """Every grid key must name a setting that the base protocol reads (for
    ``model.parameters.NAME``, a parameter of its model): a misspelt key would make every
    point fail, so it is the sweep file's error, raised before any point runs (a bad value
    fails its own points only)."""
    kind = config["protocol"]["kind"]
    sections = SECTIONS_BY_KIND[kind]
    for key in grid:
        parts = key.split(".")
        section, field = parts[:2]
        if section not in sections:
            raise ConfigError(f"{path}: [sweep.grid].{key}: a {kind!r} protocol has no "
                              f"[{section}] section{did_you_mean(section, sections)}; it "
                              f"reads {', '.join(f'[{s}]' for s in sections)}")
        if field not in SCHEMA[section]:
            raise ConfigError(f"{path}: [sweep.grid].{key}: unknown key [{section}].{field}"
                              f"{did_you_mean(field, SCHEMA[section])}; known: "
                              f"{', '.join(SCHEMA[section])}")
        read = KEYS_READ.get(kind, {}).get(section)
        if read is not None and field not in read:
            raise ConfigError(f"{path}: [sweep.grid].{key}: a {kind!r} protocol does not read "
                              f"[{section}].{field} (only {', '.join(read)})")
        parameters = (section, field) == ("model", "parameters")
        if len(parts) > (3 if parameters else 2):
            raise ConfigError(f"{path}: [sweep.grid].{key} must be "
                              + ("model.parameters.NAME" if parameters else
                                 f"section.key ([{section}].{field} is not a table)"))
        if (section, field) == ("model", "parameters") and len(parts) == 3 \
                and "model.name" not in grid:
            known = load_model(config["model"]["name"]).parameters
            if parts[2] not in known:
                raise ConfigError(f"{path}: [sweep.grid].{key}: model "
                                  f"{config['model']['name']!r} has no parameter "
                                  f"{parts[2]!r}; its parameters: {', '.join(known)}")


def _flatten(table: Any, where: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    flat: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, where, f"{full}."))
        else:
            flat[full] = value
    return flat


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
    marker, stored = folder / DONE_MARKER, folder / "protocol.toml"
    if not (marker.is_file() and stored.is_file()):
        return False
    try:
        expected = load_protocol(config).to_toml()
    except NeuroEQError:
        return False
    return stored.read_text().split("\n", 1)[-1] == expected


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
    only with ``force``; without it the sweep is refused before any point runs. One sweep
    at a time writes to a folder (the lock of :mod:`~neuroeq.protocols.folder_lock`)."""
    threads = None if threads is None else whole_number(threads, "threads", 1)
    out = result_path(Path(out_dir) if out_dir is not None else Path("results") / sweep.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # one sweep at a time in a folder (its points lock their own)
        return _run_sweep_in(sweep, out, scheduler=scheduler, workers=workers,
                             threads=threads, force=force,
                             say=progress or (lambda text: None))


def _run_sweep_in(sweep: Sweep, out: Path, *, scheduler: str | None, workers: int,
                  threads: int | None, force: bool, say: Callable[[str], None]
                  ) -> xr.Dataset:
    from dask.distributed import Client, as_completed

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
    write_text(out / "sweep.json", json.dumps({"source": sweep.source, "grid": sweep.grid,
                                               "base": sweep.base}, indent=2, default=str))
    say(f"{len(points)} points: {len(points) - len(pending)} already done, "
        f"{len(pending)} to run")
    if pending:
        cluster = None
        if scheduler is None:
            cluster = _local_cluster(workers)
        try:
            with Client(scheduler or cluster) as client:
                futures = {client.submit(run_point, point.config,
                                         str(points_dir / point.name), threads, force,
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


def combine_points(sweep: Sweep, points: list[SweepPoint], points_dir: Path,
                   outcome: Mapping[str, Mapping[str, Any]]) -> xr.Dataset:
    """Stack each finished point's primary dataset along the sweep dimensions; ``status``,
    ``error`` and ``seconds`` cover every point (failed ones have NaN results). A grid key
    whose short name the points' datasets already use gets its whole name
    (:meth:`Sweep.dimension_names`); list values become their JSON text (:func:`coordinate`)."""
    kind = sweep.base.get("protocol", {}).get("kind", "train")
    finished = []
    threads = set()  # the points' torch thread counts
    for point in points:
        path = points_dir / point.name / PRIMARY_RESULT[kind]
        if outcome[point.name]["status"] == "done" and path.is_file():
            with xr.open_dataset(path) as opened:
                part = opened.load()
            threads.add(int(part.attrs.get("torch_threads", 0)))
            part.attrs = {}
            for variable in part.variables.values():  # NaN-padded ints become floats
                variable.encoding = {}
            finished.append((point, part))
    dims = sweep.dimension_names({str(name) for _, part in finished
                                  for name in (*part.variables, *part.dims)})
    parts = [part.expand_dims({dims[k]: [coordinate(v)] for k, v in point.values.items()})
             for point, part in finished]
    coords = {dims[key]: [coordinate(v) for v in values] for key, values in sweep.grid.items()}
    shape = tuple(len(v) for v in sweep.grid.values())
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
