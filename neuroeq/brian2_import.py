"""Importing Brian2 without its process-wide exception hook.

At import, Brian2 replaces ``sys.excepthook`` with a hook that reports every uncaught
exception of the process (a typo in a user's script, neuroeq's own ``ConfigError``) as
"Brian 2 encountered an unexpected error ... please report this issue" and keeps a debug
log of it in the temporary directory. neuroeq imports Brian2 by itself (model files are
parsed with Brian2's grammar), so it puts back the hook that was there before. A script
that imported Brian2 first keeps Brian2's hook.
"""

from __future__ import annotations

import sys


def import_brian2() -> None:
    """``import brian2`` (once), leaving ``sys.excepthook`` as it was before."""
    if "brian2" in sys.modules:
        return
    hook = sys.excepthook
    import brian2  # noqa: F401

    sys.excepthook = hook
