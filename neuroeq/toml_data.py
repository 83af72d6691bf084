"""Reading a TOML file as plain data, safely: protocol and model files are data, never
code. Refuses files that are too large, not UTF-8, not TOML, or nested deeper than any
real file needs (a hostile file could exhaust the stack), each with one clear error."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from neuroeq.errors import NeuroEQError

MAX_FILE_BYTES = 1_000_000
#: deeper nesting than any protocol or model needs
MAX_DEPTH = 32


def read_toml(path: str | os.PathLike, what: str, error: type[NeuroEQError]) -> dict[str, Any]:
    """The tables of ``path`` (a ``what`` file, e.g. ``"protocol"``); problems raise
    ``error`` with a one-line message naming the file."""
    path = Path(path)
    name = f"{what} file {str(path)!r}"
    if path.is_dir():
        raise error(f"{name} is a directory; give the {what} file itself (a .toml file)")
    if not path.is_file():
        raise error(f"{name} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise error(f"{name} is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{name} is not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        bad = " ".join(f"0x{byte:02x}" for byte in exc.object[exc.start:exc.end])
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise error(f"{name} is not a UTF-8 text file (byte {bad} on line {line} is not "
                    "UTF-8)") from None
    except RecursionError:
        raise error(f"{name}: tables or arrays nested too deeply") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{name}: tables or arrays nested more than {MAX_DEPTH} levels deep")
    return data


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest (counted without recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest
