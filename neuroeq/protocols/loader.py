"""Reading protocol files (TOML, data only) and applying ``--set key=value`` overrides."""

from __future__ import annotations

import copy
import datetime
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tomli_w

from neuroeq.errors import ConfigError
from neuroeq.protocols.schema import refuse_unread_changes, validate
from neuroeq.toml_data import read_toml


@dataclass(frozen=True)
class Protocol:
    """A validated protocol: ``config`` holds every section with defaults filled in."""

    config: dict[str, dict[str, Any]]
    source: str

    @property
    def name(self) -> str:
        return self.config["protocol"]["name"]

    @property
    def kind(self) -> str:
        return self.config["protocol"]["kind"]

    def to_toml(self) -> str:
        """The resolved protocol as TOML (``None`` values, meaning 'model default', are
        left out)."""
        return tomli_w.dumps(_drop_none(self.config))


def read_protocol_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file into plain data (no code is executed)."""
    return read_toml(path, "protocol", ConfigError)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.epochs=3"`` → (``["training", "epochs"]``, ``3``); the value is read as
    a TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``), else taken as a string."""
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. training.epochs=3")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str | tuple[list[str], Any]]
                    ) -> dict[str, Any]:
    """A copy of ``data`` with each override set (sections created as needed)."""
    result = copy.deepcopy(dict(data))
    for override in overrides:
        path, value = parse_override(override) if isinstance(override, str) else override
        table = result
        for part in path[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"setting {'.'.join(path)}: {part!r} is not a table")
            table = child
        table[path[-1]] = value
    return result


def load_protocol(source: str | os.PathLike | Mapping[str, Any],
                  overrides: Iterable[str | tuple[list[str], Any]] = (),
                  name: str = "<protocol>") -> Protocol:
    """Read (a path) or take (a mapping, called ``name`` in errors) a protocol, apply
    overrides and validate it."""
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        data, name = read_protocol_file(source), str(source)
    overrides = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    data = apply_overrides(data, overrides)
    # errors name the changes too: a bad value may be one of them, not the file's
    changes = "; ".join(f"{'.'.join(path)}={_as_written(value)}" for path, value in overrides)
    where = f"{name} (with {changes})" if changes else name
    config = validate(data, where)
    refuse_unread_changes(config, [path for path, _ in overrides], where)
    return Protocol(config, name)


def _as_written(value: Any) -> str:
    """An override's value as it was typed: a TOML date or time as ``2024-01-01``, not as
    Python's ``datetime.date(2024, 1, 1)``; anything else as its ``repr``."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return repr(value)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
