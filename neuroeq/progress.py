"""Progress bars that stay readable in a terminal and in a log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: seconds between redraws when stderr is a file or a pipe (a cluster job's log, CI): a bar
#: redrawn ten times a second there writes ~90 bytes per redraw (~0.5 MB per 5,000 batches)
LOG_REDRAW_SECONDS = 30.0


def progress_bar(items: Iterable[T], description: str, enabled: bool, unit: str = "batch"
                 ) -> tqdm:
    """A transient bar over ``items`` (``enabled=False``: none). It redraws at most ten
    times a second in a terminal or a notebook (a widget there) and every
    :data:`LOG_REDRAW_SECONDS` when stderr is a file or a pipe; callers update its figures
    with ``set_postfix(..., refresh=False)``, which the next redraw shows (a forced redraw
    per batch cost ~25 µs and one line of output each)."""
    if "notebook" in tqdm.__module__:
        interactive = True
    else:
        interactive = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(items, desc=description, unit=unit, disable=not enabled, leave=False,
                mininterval=0.1 if interactive else LOG_REDRAW_SECONDS)
