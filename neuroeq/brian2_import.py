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

Brian2 also installs a Ctrl+C (SIGINT) handler that turns an interrupt during a
simulation into a request to stop it after the current step: a neuroeq phase interrupted
so would end early and its statistics would be used as if it had run. neuroeq puts the
previous handler back, so Ctrl+C stops the run (and a process started with SIGINT ignored,
a background job, keeps ignoring it: Brian2's handler called the ignored handler and
raised TypeError). Only the main thread may install handlers; in another thread (a Dask
worker's task) the import skips that call.

Brian2 copies the running script, headed by ``# Run as: <sys.argv>``, next to its debug
log, encoding the line as strict UTF-8. An argument Python could not decode in the locale's
encoding (``é`` in a result path under ``LC_ALL=C``, a Latin-1 byte under a UTF-8 locale)
holds lone surrogates there, and the import failed with ``UnicodeEncodeError``. Brian2
sees those arguments as UTF-8 (undecodable bytes as ``\\xNN``) while it is imported; its
debug log escapes such characters in later messages instead of dropping them with a
"Logging error".
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings

from neuroeq.io import utf8_text

_IMPORT_LOCK = threading.Lock()


def import_brian2() -> None:
    """``import brian2`` (once), leaving ``sys.excepthook``, ``warnings.showwarning``, the
    SIGINT handler and ``sys.argv`` as they were before."""
    if "brian2" in sys.modules:
        return
    with _IMPORT_LOCK:
        if "brian2" in sys.modules:
            return
        hook, show, argv = sys.excepthook, warnings.showwarning, sys.argv
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if in_main else None
        install = signal.signal
        if not in_main:
            signal.signal = lambda *args, **kwargs: None
        sys.argv = [utf8_text(arg) for arg in argv]
        try:
            import brian2  # noqa: F401
        finally:
            sys.argv = argv
            signal.signal = install
            sys.excepthook = hook
            warnings.showwarning = show
            if in_main and previous is not None:
                signal.signal(signal.SIGINT, previous)
        _escape_in_file_log()


def _escape_in_file_log() -> None:
    """Reopen Brian2's debug log (UTF-8) so that characters UTF-8 cannot encode (a path
    decoded under an ASCII locale) are written as escapes: with strict encoding, logging
    drops such a message and prints a "Logging error" traceback instead."""
    from brian2.utils.logger import BrianLogger

    handler = BrianLogger.file_handler
    if handler is None or handler.errors is not None or handler.stream is None:
        return
    try:
        stream = open(handler.baseFilename, "a", encoding=handler.encoding,  # noqa: SIM115
                      errors="backslashreplace")
    except OSError:
        return  # (the log file gone unwritable) Brian2's stream is kept as it is
    handler.errors = "backslashreplace"  # also when it rotates the file
    old = handler.setStream(stream)
    if old is not None:
        old.close()
