"""``neuroeq classify MODEL`` and ``neuroeq gibbscheck``: subcommands of :mod:`neuroeq.cli`.

``classify`` exits 0 when the model file's claims agree with its dynamics and 1 when they
do not (the report says what to fix); bad input exits 2 like every other command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuroeq.errors import ConfigError
from neuroeq.stability import MAX_GRID_POINTS

if TYPE_CHECKING:
    from neuroeq.cli import _Parser

EXIT_MISMATCH = 1


def add_classify_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Register ``classify`` and ``gibbscheck`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "classify", help="structural class, exact rules and stability of a neuron model")
    parser.add_argument("model", help="model name (e.g. fhn) or path to a model file")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=LOW:HIGH:N",
                        help="scan fixed-point stability over a parameter (repeat for a "
                             "second one), e.g. --grid b=0.3:0.9:4 --grid eps=0.5:8:4; "
                             "NAME=V1,V2,... also works")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="relaxation budget per stability point (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="network seed (default 0)")
    parser.add_argument("--out", type=Path, help="write the stability scan as NetCDF")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    parser.set_defaults(handler=_classify)

    check = commands.add_parser(
        "gibbscheck", help="finite-nudge and path-integral EP against the exact free-energy "
                           "gradient of a Gaussian (linear) network")
    check.add_argument("--sizes", default="3,4,2", help="layer sizes (default 3,4,2)")
    check.add_argument("--temperature", default="0.05,0.2",
                       help="temperature(s) T, comma-separated (default 0.05,0.2)")
    check.add_argument("--beta", default="0.1,1.0",
                       help="nudge(s) beta <= 1, comma-separated (default 0.1,1.0)")
    check.add_argument("--chains", type=int, default=2000,
                       help="independent Langevin chains (default 2000)")
    check.add_argument("--seed", default="0", help="seed(s), comma-separated (default 0)")
    check.add_argument("--markdown", type=Path, help="write the table (Markdown)")
    check.add_argument("--force", action="store_true", help="overwrite --markdown")
    check.set_defaults(handler=_gibbscheck)


def _classify(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from neuroeq.checks import distinct_paths
    from neuroeq.classify import classify
    from neuroeq.errors import ConfigError
    from neuroeq.io import refuse_overwrite, write_netcdf

    if args.out is not None:
        if Path(args.model).is_file():  # a model file, not a name: keep it from --out
            distinct_paths({"the model file": args.model, "--out": args.out})
        refuse_overwrite(args.out, args.force)
        if not args.grid:
            raise ConfigError("--out writes the stability scan: give at least one --grid")
    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"--max-steps {args.max_steps} must be at least 1")
    grid = parse_grid(args.grid) if args.grid else None
    result = classify(args.model, grid=grid, seed=args.seed, max_steps=args.max_steps)
    print(result.report())
    if args.out is not None and result.stability is not None:
        write_netcdf(result.stability, args.out)
        print(f"wrote {args.out}")
    return 0 if result.consistent else EXIT_MISMATCH


def _numbers(text: str, kind: Callable[[str], float], what: str) -> list:
    from neuroeq.errors import ConfigError

    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{what}: cannot read {text!r}; expected a comma-separated "
                          "list of numbers") from None
    if not values:
        raise ConfigError(f"{what}: expected a comma-separated list of numbers")
    return values


def _gibbscheck(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from neuroeq.cli import command_line
    from neuroeq.gibbs_check import gibbs_check, gibbs_table
    from neuroeq.io import refuse_overwrite, write_text

    if args.markdown is not None:
        refuse_overwrite(args.markdown, args.force)
    dataset = gibbs_check(
        sizes=_numbers(args.sizes, int, "--sizes"),
        temperatures=_numbers(args.temperature, float, "--temperature"),
        betas=_numbers(args.beta, float, "--beta"), chains=args.chains,
        seeds=_numbers(args.seed, int, "--seed"),
        progress=lambda text: print(f"gibbscheck: {text}", file=sys.stderr))
    table = gibbs_table(dataset)
    print(table)
    if args.markdown is not None:
        command = command_line(argv)
        write_text(args.markdown, f"Produced by:\n\n```\n{command}\n```\n\n{table}")
        print(f"wrote {args.markdown}")
    return 0


def parse_grid(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["b=0.2:1.0:5", "eps=1,3,6"]`` → ``{"b": linspace(0.2, 1, 5), "eps": [1, 3, 6]}``."""
    grid: dict[str, list[float]] = {}
    given: dict[str, str] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip()
        if name and name in given:
            raise ConfigError(_given_twice(name, given[name], spec))
        given[name] = spec
        try:
            if ":" in values:
                low, high, count = values.split(":")
                if not 1 <= int(count) <= MAX_GRID_POINTS:
                    raise ConfigError(f"grid {spec!r}: COUNT must lie in [1, "
                                      f"{MAX_GRID_POINTS:,}]")
                grid[name] = [float(v) for v in np.linspace(float(low), float(high),
                                                            int(count))]
            else:
                grid[name] = [float(v) for v in values.split(",") if v.strip()]
        except ConfigError:
            raise
        except ValueError:
            raise ConfigError(f"grid {spec!r}: expected NAME=LOW:HIGH:COUNT or "
                              "NAME=V1,V2,... (e.g. eps=0.5:8:5)") from None
        if not name or not grid[name]:
            raise ConfigError(f"grid {spec!r}: expected NAME=LOW:HIGH:COUNT or NAME=V1,V2,...")
    return grid


def _given_twice(name: str, first: str, second: str) -> str:
    """The error for a parameter ``name`` given by two ``--grid`` specs: only one would be
    scanned. Two lists of values are shown joined (``b=1,2``)."""
    values = [spec.partition("=")[2].strip() for spec in (first, second)]
    if any(":" in value or not value for value in values):
        example = f"{name}=LOW:HIGH:COUNT or {name}=V1,V2,..."
    else:
        example = f"{name}={','.join(values)}"
    return (f"grid parameter {name!r} is given twice (--grid {first} and --grid {second}); "
            f"give all its values in one --grid {example}")
