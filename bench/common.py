"""Shared helpers of the torch-engine benchmarks: options, best-of timing, machine notes."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import torch


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--device``, ``--threads`` and ``--repeats``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda (results record the device)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is kept)")
    return p


def add_data_root(p: argparse.ArgumentParser) -> None:
    """``--data-root DIR``: the folder of the MNIST IDX files; without it
    ``$NEUROEQ_DATA_DIR``, as everywhere in neuroeq."""
    p.add_argument("--data-root", default=None,
                   help="directory of the MNIST IDX files (default: $NEUROEQ_DATA_DIR); "
                        "without them the benchmark uses random images of MNIST's shape "
                        "and says so")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and return the device (CUDA must exist when asked for)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeats: int,
              warm_up: bool = True) -> float:
    """The best wall time (seconds) of ``repeats`` calls of ``fn`` after one warm-up call
    (``warm_up=False``: none, for a caller that warmed it up)."""
    if warm_up:
        fn()
        synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def machine_note(device: torch.device, threads: int) -> str:
    """One line: device, threads, torch version and the load average when it was measured."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = (f"CPU ({os.cpu_count()} cores, {threads} torch "
                f"thread{'' if threads == 1 else 's'})")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    brian2 = f"; Brian2 {_version('brian2')}" if "brian2" in sys.modules else ""
    return (f"device: {name}; torch {torch.__version__}{brian2}; Python "
            f"{platform.python_version()}; load average (1, 5, 15 min) at the end: {load}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.2e}"
    return str(value)
