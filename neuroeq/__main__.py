"""``python -m neuroeq`` is the ``neuroeq`` command."""

from neuroeq.cli import main

raise SystemExit(main())
