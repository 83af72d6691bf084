"""The ``neuroeq`` command line. Bad input ends with one error line and exit status 2."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from neuroeq.cli_classify import add_classify_commands
from neuroeq.cli_protocols import add_protocol_commands
from neuroeq.engines.settings import DTYPES
from neuroeq.errors import NeuroEQError
from neuroeq.gradcheck import DEFAULT_RULES
from neuroeq.network import COUPLINGS
from neuroeq.protocols.schema import BRIAN2_RULES, CHECKED_ELSEWHERE_DOC, RULE_CHOICES
from neuroeq.readout import COSTS, READOUT_KINDS

if TYPE_CHECKING:
    from neuroeq.engines.brian2_engine import Brian2Engine

EXIT_USAGE = 2
OUT_OF_MEMORY = "out of memory; use smaller networks, batches, chains or grids"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def _list(kind: Callable[[str], object], what: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list")
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: cannot read {text!r}") from None
    return parse


def _add_gradcheck(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser("gradcheck", help="compare rules with the true gradient")
    parser.add_argument("--model", type=_list(str, "--model"), default=["hopfield_smooth"],
                        help="model name(s), comma-separated (default hopfield_smooth)")
    parser.add_argument("--engine", choices=["torch", "brian2"], default="torch",
                        help="relaxation engine (brian2: Cython; rules "
                        f"{', '.join(BRIAN2_RULES)})")
    parser.add_argument("--sizes", type=_list(int, "--sizes"), default=[20, 16, 5],
                        help="layer sizes, input first (default 20,16,5)")
    parser.add_argument("--coupling", type=_list(str, "--coupling"), default=["symmetric"],
                        help=f"{', '.join(COUPLINGS)} (comma-separated)")
    parser.add_argument("--alpha", type=_list(float, "--alpha"), default=[1.0],
                        help="asymmetry(ies) of asymmetric nets (default 1; values other "
                        "than 1 need asymmetric among the --coupling values)")
    parser.add_argument("--rules", type=_list(str, "--rules"), default=None,
                        help=f"rules and oracles: {', '.join(RULE_CHOICES)} (default "
                        f"{','.join(DEFAULT_RULES)}; with --engine brian2, those of them "
                        f"it runs; {CHECKED_ELSEWHERE_DOC})")
    parser.add_argument("--beta", type=_list(float, "--beta"), default=[1e-3],
                        help="nudge(s) β, comma-separated, non-zero (negative nudges too; "
                        "holomorphic EP takes the radius r > 0; default 1e-3)")
    parser.add_argument("--seed", type=_list(int, "--seed"), default=[0],
                        help="network seed(s), comma-separated (default 0)")
    parser.add_argument("--batch", type=int, default=4, help="samples (default 4)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float64",
                        help="default float64")
    parser.add_argument("--readout", choices=READOUT_KINDS, default="identity",
                        help="default identity")
    parser.add_argument("--cost", choices=COSTS, default="mse", help="default mse")
    parser.add_argument("--out", type=Path, help="write the dataset as NetCDF")
    parser.add_argument("--markdown", type=Path, help="write the summary table (Markdown)")
    parser.add_argument("--force", action="store_true", help="overwrite --out / --markdown")
    parser.set_defaults(handler=_gradcheck)


def _gradcheck(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from neuroeq.checks import distinct_paths
    from neuroeq.gradcheck import gradcheck, summary_table
    from neuroeq.io import refuse_overwrite, write_netcdf, write_outputs, write_text

    distinct_paths({"--out": args.out, "--markdown": args.markdown})
    for path in (args.out, args.markdown):
        if path is not None:
            refuse_overwrite(path, args.force)
    engine = None
    if args.engine == "brian2":
        engine = _brian2_engine(args)
    elif args.rules is None:
        args.rules = list(DEFAULT_RULES)
    dataset = gradcheck(models=args.model, sizes=args.sizes, couplings=args.coupling,
                        alphas=args.alpha, rules=args.rules, betas=args.beta, seeds=args.seed,
                        batch=args.batch, dtype=args.dtype, readout=args.readout,
                        cost=args.cost, engine=engine,
                        progress=lambda text: print(f"gradcheck: {text}", file=sys.stderr))
    table = summary_table(dataset)
    print(table)
    command = command_line(argv)
    writers = {args.out: lambda path: write_netcdf(dataset, path),
               args.markdown: lambda path: write_text(
                   path, f"Produced by:\n\n```\n{command}\n```\n\n{table}")}
    write_outputs({path: write for path, write in writers.items() if path is not None})
    return 0


def command_line(argv: Sequence[str]) -> str:
    """``neuroeq ARGS`` as typed, for a report's "Produced by": arguments the locale could
    not decode (``é`` under ``LC_ALL=C``) are read back from their bytes as UTF-8."""
    typed = (os.fsencode(arg).decode("utf-8", "replace") for arg in argv)
    return "neuroeq " + " ".join(shlex.quote(arg) for arg in typed)


def _brian2_engine(args: argparse.Namespace) -> Brian2Engine:
    """The Brian2 engine for ``gradcheck --engine brian2`` (rules that need autograd through
    the relaxation, batched parameters or Dyadic EP's doubled state stay on torch)."""
    from neuroeq.engines.brian2_engine import Brian2Engine
    from neuroeq.engines.settings import gradient_check_tolerance
    from neuroeq.errors import ConfigError
    supported = BRIAN2_RULES
    if args.rules is None:  # the default rules it can run
        args.rules = [rule for rule in DEFAULT_RULES if rule in supported]
    unsupported = [rule for rule in args.rules if rule not in supported]
    if unsupported:
        raise ConfigError(f"--engine brian2 cannot run {', '.join(unsupported)}; choose from "
                          f"{', '.join(supported)} (or use --engine torch)")
    return Brian2Engine(target="cython", tol=gradient_check_tolerance(args.dtype),
                        max_steps=100_000, check_every=400)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neuroeq", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_gradcheck(commands)
    add_protocol_commands(commands)
    add_classify_commands(commands)
    return parser


def _tolerant_output() -> None:
    """Let stdout and stderr show what their encoding cannot (``α`` under ``LC_ALL=C``) as
    ``\\u03b1`` rather than fail; files are written as UTF-8 whatever the locale."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerant_output()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.version:
            from neuroeq import __version__
            print(__version__)
            return 0
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_USAGE
        return args.handler(args, argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except NeuroEQError as exc:  # one line, whatever the message (Brian2's span several)
        print(f"neuroeq: error: {' '.join(str(exc).split())}{_notes(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the output piped into a reader that stopped (| head)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would fail again
        return 1
    except OSError as exc:  # a folder that is a file, no permission, a full disk, ...
        where = f": {exc.filename!r}" if exc.filename else ""
        print(f"neuroeq: error: {exc.strerror or exc}{where}{_notes(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"neuroeq: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:  # torch's allocator: "DefaultCPUAllocator: can't allocate"
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        print(f"neuroeq: error: {OUT_OF_MEMORY} ({' '.join(str(exc).split())[:200]})",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"neuroeq: interrupted{_notes(exc)}", file=sys.stderr)
        return 130


def _notes(exc: BaseException) -> str:
    """The notes added to an error on its way up (where the replaced results are kept)."""
    return "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))


if __name__ == "__main__":
    raise SystemExit(main())
