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

from neuroeq.checks import did_you_mean
from neuroeq.errors import ConfigError
from neuroeq.io import utf8_data
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
        left out); text holding bytes the locale could not decode as the UTF-8 text they
        spell (:func:`~neuroeq.io.utf8_text`)."""
        return tomli_w.dumps(utf8_data(_drop_none(self.config)))


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
                  name: str = "<protocol>", *, check_parameter_names: bool = True
                  ) -> Protocol:
    """Read (a path) or take (a mapping, called ``name`` in errors) a protocol, apply
    overrides and validate it. ``check_parameter_names``: refuse a ``model.parameters.NAME``
    its model does not have and a ``training.lr`` key its network does not have (reads the
    model file, data only; a sweep, whose grid may change either, checks its points)."""
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        data, name = read_protocol_file(source), str(source)
    overrides = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    data = apply_overrides(data, overrides)
    # errors name the changes too: a bad value may be one of them, not the file's
    changes = "; ".join(f"{'.'.join(path)}={_as_written(value)}" for path, value in overrides)
    where = f"{name} (with {changes})" if changes else name
    _refuse_undecodable(data, where)
    config = validate(data, where)
    refuse_unread_changes(config, [path for path, _ in overrides], where)
    if check_parameter_names:
        refuse_unknown_model_parameters(config, where)
        refuse_unknown_rate_names(config, where)
    return Protocol(config, name)


def refuse_unknown_rate_names(config: Mapping[str, Any], where: str) -> None:
    """A ``training.lr`` table may name only parameters the network has: checked on a
    network of the same layers and couplings one unit wide (the names do not depend on the
    widths), so that a misspelt one is named before a run starts."""
    rates = config.get("training", {}).get("lr")
    if not isinstance(rates, Mapping) or "network" not in config:
        return
    from neuroeq.protocols.build import build_network
    from neuroeq.training.trainer import rate_per_parameter

    proxy = build_network(config, sizes=[1] * len(config["network"]["sizes"]))
    rate_per_parameter(proxy, rates, f"{where}: ")


def refuse_unknown_model_parameters(config: Mapping[str, Any], where: str) -> None:
    """``model.parameters`` may set only parameters the model file declares: a misspelt one
    is named when the protocol loads, not once a run has started."""
    section = config.get("model")
    for parameter in (section or {}).get("parameters") or {}:
        check_model_parameter(str(parameter), section["name"],
                              f"{where}: model.parameters.{parameter}")


def check_model_parameter(name: str, model: str, where: str) -> None:
    """Refuse ``name`` unless model ``model`` (a name or a file; read as data) declares it;
    ``where`` (the key that sets it) opens the error."""
    from neuroeq.neuron_model import load_model

    known = load_model(model).parameters
    if name not in known:
        raise ConfigError(f"{where}: model {model!r} has no parameter {name!r}"
                          f"{did_you_mean(name, known)}; its parameters: {', '.join(known)}")


def _refuse_undecodable(data: Mapping[str, Any], where: str) -> None:
    """Refuse text holding bytes that are not UTF-8 (a Latin-1 ``é`` in a ``--set``, which
    Python reads as a lone surrogate): the ``protocol.toml`` a run writes is UTF-8 and could
    not hold them. Bytes that are UTF-8 (``é`` typed in a UTF-8 terminal under
    ``LC_ALL=C``) are written as the text they spell."""
    stack: list[tuple[str, Any]] = [(key, value) for key, value in data.items()]
    while stack:
        key, value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            try:
                value.encode("utf-8", "surrogateescape").decode("utf-8")
            except UnicodeError:
                raise ConfigError(
                    f"{where}: {key} is not UTF-8 text: it holds {_bad_bytes(value)}, which "
                    "UTF-8 does not decode (a protocol file is UTF-8); give the value in "
                    "UTF-8, e.g. from a terminal set to UTF-8") from None


def _bad_bytes(text: str) -> str:
    """The bytes of ``text`` (read with surrogates for undecoded bytes) that UTF-8 does not
    decode, e.g. ``the byte 0xe9``."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "lone surrogates that stand for no byte"
    bad, start = [], 0
    while start < len(data):
        try:
            data[start:].decode("utf-8")
            break
        except UnicodeDecodeError as error:
            bad.extend(data[start + error.start:start + error.end])
            start += error.end
    return ("the byte " if len(bad) == 1 else "the bytes ") + " ".join(f"0x{byte:02x}"
                                                                       for byte in bad)


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
