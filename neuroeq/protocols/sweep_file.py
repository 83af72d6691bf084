"""Sweep files: a grid over protocol parameters, read and checked before anything runs
(:func:`load_sweep` → :class:`Sweep`; :mod:`neuroeq.protocols.sweep` runs it).

A sweep file is a protocol file with a ``[sweep]`` table::

    [sweep]
    name = "beta_sweep"                 # result folder name (default: the file's stem)
    protocol = "train_digits.toml"      # base protocol, relative to this file; or put the
                                        # base sections ([protocol], [model], ...) inline
    [sweep.grid]                        # dotted keys -> lists of values (Cartesian product)
    "rule.beta" = [0.1, 0.5]
    "network.seed" = [0, 1]
    [sweep.set]                         # dotted keys -> fixed values (a table is a value:
    "training.lr" = {W1 = 0.1, default = 0.05}  # a per-parameter learning rate)

A grid key the base protocol does not read, a grid none of whose points is a valid
protocol, and a fixed value for a grid key are the file's errors, raised when it loads;
``[sweep.set]`` and ``--set`` are checked as a single protocol's ``--set`` is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuroeq.checks import did_you_mean, folder_name
from neuroeq.errors import ConfigError
from neuroeq.protocols.loader import (
    apply_overrides,
    check_model_parameter,
    load_protocol,
    parse_override,
    read_protocol_file,
)
from neuroeq.protocols.schema import KEYS_READ, SCHEMA, SECTIONS_BY_KIND, read_by

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

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps one (their points the same runs): the grid, its keys in
        order, and the resolved base protocol (``sweep.json`` records it)."""
        return {"grid": [[key, values] for key, values in self.grid.items()],
                "protocol": load_protocol(self.base, name=f"{self.source}: its base "
                                                         "protocol").config}

    def fingerprint(self) -> str:
        """A short hash of :meth:`identity` (``id`` in ``sweep.json``)."""
        return identity_hash(self.identity())

    def points(self) -> list[SweepPoint]:
        keys = list(self.grid)
        points = []
        for index, combo in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            values = dict(zip(keys, combo, strict=True))
            label = "_".join(f"{self.dims[k]}-{_label(v)}" for k, v in values.items())
            config = _absolute_data_root(
                apply_overrides(self.base, [(k.split("."), v) for k, v in values.items()]))
            points.append(SweepPoint(f"p{index:04d}_{label}"[:120], values, config))
        return points


def _absolute_data_root(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a relative ``[data].root`` made absolute (against the directory the
    sweep runs from, as a single run reads it): a scheduler's workers may run elsewhere."""
    data = config.get("data")
    root = data.get("root") if isinstance(data, Mapping) else None
    if isinstance(root, str) and root and not os.path.isabs(os.path.expanduser(root)):
        config = {**config, "data": {**data, "root": os.path.abspath(root)}}
    return config


def identity_hash(identity: Mapping[str, Any]) -> str:
    """The hash of a sweep's :meth:`Sweep.identity` (of one read back from JSON too)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(value)) or "x"


def coordinate(value: Any) -> Any:
    """A grid value as a coordinate label: numbers, strings and booleans as they are; a list
    or a table (``network.sizes = [[64, 8, 10], ...]``) as its compact JSON text."""
    if isinstance(value, list | Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return value


def axis_labels(values: list[Any]) -> list[Any]:
    """The coordinate labels of one grid key's values: :func:`coordinate` of each, or every
    value's JSON text where some are lists or tables (``training.lr = [{W1 = 0.1, default =
    0.05}, 0.05]``: one coordinate holds one type, or the points' datasets do not combine)."""
    if any(isinstance(value, list | Mapping) for value in values):
        return [json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
                for value in values]
    return [coordinate(value) for value in values]


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
    changes = [(k.split("."), v) for k, v in fixed.items()]
    changes += [parse_override(o) for o in overrides]
    for key in (".".join(keys) for keys, _ in changes):
        if key in grid:
            raise ConfigError(f"{path}: {key} is a grid key ([sweep.grid].{key}): every point "
                              "sets its own value, so a fixed value would be ignored; change "
                              "the grid instead")
    name = folder_name(table.get("name", path.stem), f"{path}: [sweep].name")
    # the base itself must be valid (values are checked per point), and its changes are
    # checked as a single protocol's --set is: a key its kind does not read is refused
    base = load_protocol(data, changes, name=f"{path}: its base protocol",
                         check_parameter_names=False)  # (checked below, grid in mind)
    _check_model_parameters(changes, grid, base.config, path)
    data = apply_overrides(data, changes)
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
                              f"[{section}].{field} (only {', '.join(read)}; "
                              f"{read_by(section, field)})")
        coupling = config.get("network", {}).get("coupling", "asymmetric")
        if (section, field) == ("network", "alpha") and coupling != "asymmetric" \
                and "network.coupling" not in grid:
            raise ConfigError(f"{path}: [sweep.grid].{key}: [network].alpha sets the "
                              f"asymmetry of coupling 'asymmetric', and the base protocol's "
                              f"[network].coupling = {coupling!r} has none: set coupling = "
                              '"asymmetric" in the base')
        parameters = (section, field) == ("model", "parameters")
        if len(parts) > (3 if parameters else 2):
            raise ConfigError(f"{path}: [sweep.grid].{key} must be "
                              + ("model.parameters.NAME" if parameters else
                                 f"section.key ([{section}].{field} is not a table)"))
        if parameters and len(parts) == 3 and "model.name" not in grid:
            check_model_parameter(parts[2], config["model"]["name"],
                                  f"{path}: [sweep.grid].{key}")


def _check_model_parameters(changes: list[tuple[list[str], Any]], grid: Mapping[str, Any],
                            config: dict[str, Any], path: Path) -> None:
    """A ``[sweep.set]`` or ``--set`` of a parameter the base's model does not have would
    fail every point (unless the grid changes the model): refused like a grid key."""
    if "model.name" in grid:
        return
    for keys, value in changes:
        if keys[:2] != ["model", "parameters"]:
            continue
        names = keys[2:3] or (list(value) if isinstance(value, Mapping) else [])
        for name in names:
            check_model_parameter(str(name), config["model"]["name"],
                                  f"{path}: {'.'.join(keys)}")




def _flatten(table: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of ``table`` down to the settings (``training.lr``; ``model.parameters.NAME``):
    nested tables (``[sweep.set.training]``, unquoted ``training.epochs``) are followed
    to a setting, and a table there is its value (``"training.lr" = {W1 = 0.1}``)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    flat: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and not _names_a_setting(full):
            flat.update(_flatten(value, where, f"{full}."))
        else:
            flat[full] = value
    return flat


def _names_a_setting(key: str) -> bool:
    """Whether ``key`` names one setting: ``section.key``, or a parameter of the model
    (``model.parameters.NAME``: the model's parameters are set one by one)."""
    parts = key.split(".")
    return len(parts) >= (3 if parts[:2] == ["model", "parameters"] else 2)
