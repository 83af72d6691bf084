"""``neuroeq run`` and ``neuroeq sweep``: protocol files from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuroeq.cli import _Parser


def add_protocol_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = commands.add_parser("run", help="run a protocol file into a result folder")
    run.add_argument("protocol", type=Path, help="protocol file (TOML), e.g. protocols/demo.toml")
    run.add_argument("--out", type=Path, help="result folder (default results/<name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a setting, e.g. training.epochs=3")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--force", action="store_true", help="replace an existing result "
                       "folder (kept as NAME.previous until the new run is done)")
    start.add_argument("--resume", action="store_true",
                       help="continue a training run from its checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--threads", type=int, help="torch CPU threads for the run (default: "
                     "torch's; results are reproducible bit for bit at one count)")
    run.set_defaults(handler=_run)

    sweep = commands.add_parser("sweep", help="run a grid of protocol points on Dask")
    sweep.add_argument("sweep", type=Path, help="sweep file (TOML with a [sweep] table)")
    sweep.add_argument("--out", type=Path, help="result folder (default results/<name>)")
    sweep.add_argument("--scheduler", help="address of a running Dask scheduler "
                       "(default: start a LocalCluster)")
    sweep.add_argument("--workers", type=int, default=2,
                       help="LocalCluster worker processes (default 2)")
    sweep.add_argument("--threads", type=int,
                       help="torch CPU threads per point (default: the workers' own, 1 in "
                       "a LocalCluster; keep workers x threads within the cores)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a base setting (not a grid key)")
    sweep.add_argument("--force", action="store_true", help="replace finished points made "
                       "with other settings (a re-run of the same sweep skips them); write "
                       "into a folder of another sweep's results or of files no sweep wrote")
    sweep.set_defaults(handler=_sweep)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from neuroeq.checks import whole_number
    from neuroeq.protocols import load_protocol, run_protocol

    if args.threads is not None:
        whole_number(args.threads, "--threads", 1)
    protocol = load_protocol(args.protocol, args.overrides)
    out = run_protocol(protocol, args.out, force=args.force, resume=args.resume,
                       progress=not args.quiet, threads=args.threads)
    print(f"results in {out}/: {_contents(out)}")
    return 0


def _contents(out: Path) -> str:
    """What a result folder holds, e.g. ``protocol.toml, log.txt, metrics.nc, figures/ (4)``
    (``DONE`` left out)."""
    names = []
    for entry in sorted(out.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if entry.is_dir():
            names.append(f"{entry.name}/ ({sum(1 for _ in entry.iterdir())})")
        elif entry.name != "DONE":
            names.append(entry.name)
    return ", ".join(names)


def _sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from neuroeq.checks import whole_number
    from neuroeq.protocols.sweep import run_sweep
    from neuroeq.protocols.sweep_file import load_sweep

    whole_number(args.workers, "--workers", 1)
    if args.threads is not None:
        whole_number(args.threads, "--threads", 1)
    sweep = load_sweep(args.sweep, args.overrides)
    out = args.out if args.out is not None else Path("results") / sweep.name
    dataset = run_sweep(sweep, out, scheduler=args.scheduler, workers=args.workers,
                        threads=args.threads, force=args.force,
                        progress=lambda text: print(f"sweep: {text}", file=sys.stderr))
    failed = int((dataset.status != "done").sum())
    print(f"{dataset.status.size - failed} of {dataset.status.size} points done; combined "
          f"dataset in {out}/sweep.nc" + (f"; {failed} failed (see {out}/failures.txt)"
                                          if failed else ""))
    return 1 if failed else 0
