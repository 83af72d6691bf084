"""Importing Brian2 without its process-wide exception hook and warning display.

At import, Brian2 replaces ``sys.excepthook`` with a hook that reports every uncaught
exception of the process (a typo in a user's script, neuroeq's own ``ConfigError``) as
"Brian 2 encountered an unexpected error ... please report this issue" and keeps a debug
log of it in the temporary directory; and it routes every Python warning into its log
(``logging.captureWarnings``), which printed neuroeq's own warnings twice, as
``WARNING ... [py.warnings]`` with a source line, even under ``--quiet``. neuroeq imports
Brian2 by itself (model files are parsed with Brian2's grammar), so it puts back the hook
and the warning display that were there before. A script that imported Brian2 first keeps
Brian2's.
"""

from __future__ import annotations

import sys
import warnings


def import_brian2() -> None:
    """``import brian2`` (once), leaving ``sys.excepthook`` and ``warnings.showwarning``
    as they were before."""
    if "brian2" in sys.modules:
        return
    hook, show = sys.excepthook, warnings.showwarning
    import brian2  # noqa: F401

    sys.excepthook = hook
    warnings.showwarning = show
