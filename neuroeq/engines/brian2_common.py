"""Brian2 set-up shared by the Brian2 engines: code-generation target and a cache
directory the package controls.

The Cython cache goes to ``$NEUROEQ_CACHE_DIR/brian2`` when that variable is set, else to
``<repository>/.cache/brian2`` in a source checkout, else to the user's cache directory
(``~/.cache/neuroeq/brian2``). Compiled extensions are reused across runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from neuroeq.errors import ConfigError

TARGETS = ("cython", "numpy")
CACHE_ENV = "NEUROEQ_CACHE_DIR"


def cache_directory() -> Path:
    """Where Brian2's compiled code is cached (created if missing)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        checkout = Path(__file__).resolve().parents[2]
        if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
            base = checkout / ".cache"
        else:
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neuroeq"
    path = base / "brian2"
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_brian2(target: str = "cython") -> None:
    """Select the runtime code-generation target and point Brian2's cache at ours."""
    if target not in TARGETS:
        raise ConfigError(f"Brian2 target {target!r} must be one of {', '.join(TARGETS)}")
    from brian2 import prefs, set_device

    set_device("runtime")
    prefs.codegen.target = target
    prefs.codegen.runtime.cython.cache_dir = str(cache_directory())
    prefs.codegen.runtime.cython.multiprocess_safe = True
    prefs.logging.console_log_level = "WARNING"
