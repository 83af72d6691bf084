"""Brian2 engine throughput (FitzHugh-Nagumo 784-256-10) and stochastic EP versus mean-field EP.

Throughput: samples/s of one free phase (300 Euler steps of dt = 0.1 ms, no early stop) for
the Brian2 engine (Cython, one NeuronGroup per layer holding the batch as block-diagonal
copies, the clamped input as a constant current) at batch 1, 16 and 256; the torch engine on
the same network and steps; and a naive loop that builds a Brian2 network per sample and
runs it once. Stochastic EP: the cosine, relative RMS error and bias of the spiking estimate
against its mean-field limit (the same centered contrast under the same constant nudge), the
bias that the seeds' noise alone would show, and the fitted slope of error versus window.

Usage (from the repository root):

    python bench/bench_brian2.py              # print the tables
    python bench/bench_brian2.py --write      # also replace the "## Brian2 engine" section
                                              # of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines.brian2_engine import Brian2Engine

SIZES = (784, 256, 10)
STEPS = 300
HEADING = "## Brian2 engine"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _time(function, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(batches=(1, 16, 256), naive_samples: int = 3, repeats: int = 3) -> list[dict]:
    network = Network("fhn", SIZES, seed=0)
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(max(batches), SIZES[0], generator=generator, dtype=torch.float64)
    rows = []
    brian = Brian2Engine(target="cython", max_steps=STEPS, tol=0.0, check_every=STEPS)
    torch_engine = TorchEngine(max_steps=STEPS, tol=0.0, check_every=STEPS)
    for batch in batches:
        x = data[:batch]
        seconds = _time(lambda x=x: brian.relax(network, x), repeats)
        rows.append({"engine": "Brian2 (cython, batched)", "batch": batch,
                     "samples_per_s": batch / seconds})
        with torch.no_grad():
            seconds = _time(lambda x=x: torch_engine.relax(network, x), repeats)
        rows.append({"engine": "torch", "batch": batch, "samples_per_s": batch / seconds})

    def naive() -> None:  # a fresh Brian2 network per sample, one run() each
        for k in range(naive_samples):
            Brian2Engine(target="cython", max_steps=STEPS, tol=0.0,
                         check_every=STEPS).relax(network, data[k:k + 1])

    seconds = _time(naive, repeats)
    rows.append({"engine": "Brian2 naive (network built and run per sample)", "batch": 1,
                 "samples_per_s": naive_samples / seconds})
    return rows


def stochastic() -> dict:
    from neuroeq.analysis.stochastic import stochastic_vs_mean_field

    network = Network("spiking_rate", (6, 8, 3), seed=0, gain=0.5, bias_init=0.5)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=generator)
    dataset = stochastic_vs_mean_field(network, x, y, beta=0.1,
                                       windows=(250, 500, 1000, 2000, 4000, 8000),
                                       replicas=(1, 4, 16), seeds=range(6), target="cython")
    return dataset


def brian2_version() -> str:
    from importlib.metadata import version

    return version("brian2")


def markdown(rows: list[dict], dataset, command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [HEADING, "",
             f"Measured {when} on {os.cpu_count()} CPU cores "
             f"({platform.processor() or platform.machine()}), torch {torch.__version__}, "
             f"Brian2 {brian2_version()}, load average {load:.2f} at the end of the run"
             + ((" (other jobs shared the machine; " if load > 1.0 else " (")
                + "figures are the best of 3 repeats after a warm-up"
                + (", so contention lowers them)." if load > 1.0 else ").") if rows else "."),
             "", "Command:", "", "```", command, "```"]
    if rows:
        lines += _throughput_lines(rows)
    if dataset is not None:
        lines += _stochastic_lines(dataset)
    return "\n".join(lines) + "\n"


def _throughput_lines(rows: list[dict]) -> list[str]:
    by = {(r["engine"], r["batch"]): r["samples_per_s"] for r in rows}
    lines = ["", f"FitzHugh-Nagumo {'-'.join(map(str, SIZES))}, {STEPS} Euler steps of 0.1 ms, "
             "float64, free phase only; torch on one thread (as Brian2's Cython runtime). "
             "Brian2 batch 1 reuses its objects (one run() per sample); the naive loop builds "
             "a Brian2 network per sample (code cached, not recompiled) and runs it once.", "",
             "| engine | batch | samples/s |", "|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['engine']} | {row['batch']} | {row['samples_per_s']:.1f} |")
    naive = [r for r in rows if r["engine"].startswith("Brian2 naive")][0]["samples_per_s"]
    biggest = max(r["batch"] for r in rows)
    batched = by[("Brian2 (cython, batched)", biggest)]
    single = by[("Brian2 (cython, batched)", 1)]
    lines += ["", f"Batched Brian2 (batch {biggest}) / naive loop: "
              f"{batched / naive:.0f}× (goal ≥ 20×); / Brian2 at batch 1 with reused objects: "
              f"{batched / single:.0f}×; torch / batched Brian2 at batch {biggest}: "
              f"{by[('torch', biggest)] / batched:.1f}× (goal ≤ 10×)."]
    return lines


def _stochastic_lines(dataset) -> list[str]:
    attrs = dataset.attrs
    lines = ["", "Stochastic EP versus its mean-field limit (the same centered contrast on the "
             "rate network under the same constant nudge, `mean_field_limit`; spiking_rate "
             f"6-8-3, batch 4, beta {attrs['beta']}, dt {attrs['dt_ms']} ms, tau/dt = "
             f"{attrs['tau_over_dt']:.0f}, {dataset.sizes['seed']} seeds):", "",
             "| window (steps) | replicas | cosine (mean over seeds) | relative RMS error "
             "| relative bias of the seeds' mean | noise floor of that mean | bias beyond the "
             "noise |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for window in dataset.window.values:
        for replicas in dataset.replicas.values:
            point = dataset.sel(window=window, replicas=replicas)
            lines.append(f"| {window} | {replicas} | {float(point.cosine.mean()):.4f} | "
                         f"{float(point.rmse):.4f} | {float(point.bias):.4f} | "
                         f"{float(point.noise_floor):.4f} | "
                         f"{float(point.bias_beyond_noise):.4f} |")
    beyond = dataset.bias_beyond_noise.values
    ratio = float(((dataset.bias / dataset.noise_floor) ** 2).mean())
    lines += ["", f"The bias column is the distance of the mean over {dataset.sizes['seed']} "
              "seeds from the limit, and that mean still holds noise: the noise floor "
              "(√(tr Σ̂ / seeds), Σ̂ the unbiased covariance over seeds) is what noise alone "
              "would give, and (bias / noise floor)² is about 1 on average for an unbiased "
              f"estimate. Here its mean over the {beyond.size} points is {ratio:.2f}; the "
              "bias beyond the noise (√max(0, bias² - floor²), itself a noisy estimate that "
              f"exceeds 0 at about half the points by chance) exceeds 0 at "
              f"{int((beyond > 0).sum())}, largest {float(beyond.max()):.4f}."]
    lines += ["", f"Slope of log(RMS error) versus log(window), 1 replica: "
              f"{attrs['slope_window_1']:.2f}; {int(dataset.replicas.max())} replicas: "
              f"{attrs['slope_window_max']:.2f} (1/√window predicts -0.5). The mean-field "
              f"limit versus the implicit-differentiation gradient: cosine "
              f"{attrs['mean_field_vs_true_cosine']:.5f}, relative error "
              f"{attrs['mean_field_vs_true_rel_error']:.1e}."]
    return lines


def write_section(text: str, path: Path = RESULTS) -> None:
    """Add this run's text at the top of the ``## Brian2 engine`` section of RESULTS.md,
    under its heading; the earlier runs and the hand-written notes below stay as they are."""
    content = path.read_text()
    start = content.index(HEADING) + len(HEADING)
    body = text.split(HEADING, 1)[-1].strip("\n")
    path.write_text(content[:start] + "\n\n" + body + content[start:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="add this run at the top of "
                        "bench/RESULTS.md's Brian2 engine section (earlier runs are kept)")
    parser.add_argument("--skip-stochastic", action="store_true")
    parser.add_argument("--stochastic-only", action="store_true",
                        help="only the stochastic-EP table (no throughput rows)")
    args = parser.parse_args(argv)
    # Brian2's Cython runtime is single-threaded; torch gets one thread too. On the shared
    # 2-core machine two torch threads ran 7x slower than one (OpenMP spin-waiting).
    torch.set_num_threads(1)
    rows = [] if args.stochastic_only else throughput()
    dataset = None if args.skip_stochastic else stochastic()
    command = "python bench/bench_brian2.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    text = markdown(rows, dataset, command)
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote the '{HEADING}' section of {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
