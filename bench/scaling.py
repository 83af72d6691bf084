"""Torch engine scaling (batch, width, depth) and roofline, with a plot.

Each point times a free phase of 20 Euler steps (closed-form map, no early stop, float32,
Hopfield neuron) and, in the same rounds (one call of each per round, after a warm-up; the
best of ``--repeats`` rounds kept), one pass of matmuls of the same shapes (one
``(batch × n_pre) @ (n_pre × n_post)`` per synapse matrix). Roofline, as the issue defines
it: effective FLOP/s = 2 × synapses × batch × steps / relaxation time, divided by the
matmul FLOP/s = 2 × synapses × batch / matmul-pass time. (neuroeq computes the clamped
input's ``W x`` once and each recurrent matrix twice per step, forward and transposed, so
the FLOPs it executes differ from this count; the column "executed / matmul" divides the
FLOP/s it actually executes by the matmul FLOP/s.)

Usage (from the repository root):

    python bench/scaling.py [--device cpu|cuda] [--threads 2] [--plot bench/scaling.png]
"""

from __future__ import annotations

import torch
from common import best_time, machine_note, parser, setup, table

from neuroeq import Network, TorchEngine

STEPS = 20


def measure(sizes: tuple[int, ...], batch: int, device, repeats: int) -> dict:
    network = Network("hopfield", sizes, dtype=torch.float32, device=device, seed=0)
    x = torch.rand(batch, sizes[0], device=device)
    engine = TorchEngine(tol=0.0, max_steps=STEPS)
    operands = [(torch.rand(batch, n_pre, device=device),
                 torch.rand(n_pre, n_post, device=device))
                for n_pre, n_post in zip(sizes[:-1], sizes[1:], strict=True)]

    def relaxation() -> None:
        engine.relax(network, x)

    def matmuls() -> None:  # as many passes as the relaxation has steps (one is too short
        for _ in range(STEPS):  # to time steadily on a shared machine)
            for a, b in operands:
                a @ b

    # interleaved rounds (one call of each per round, the best of each kept): a slow spell
    # of the machine falls on both sides of the ratio instead of on one
    relax = matmul = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            relax = min(relax, best_time(relaxation, device, 1))
            matmul = min(matmul, best_time(matmuls, device, 1) / STEPS)
    synapses = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    recurrent = synapses - sizes[0] * sizes[1]
    effective = 2 * synapses * batch * STEPS / relax
    executed = 2 * batch * (sizes[0] * sizes[1] + 2 * recurrent * STEPS) / relax
    peak = 2 * synapses * batch / matmul
    return {"relax_ms": relax * 1e3, "samples_s": batch / relax, "effective": effective,
            "peak": peak, "roofline": effective / peak, "executed": executed / peak}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--plot", default="bench/scaling.png")
    args = p.parse_args()
    device = setup(args)
    sweeps = {
        "batch": [((784, 500, 10), b) for b in (16, 64, 128, 512, 1024)],
        "width": [((784, w, 10), 128) for w in (128, 500, 1024, 2048, 4096)],
        "depth": [((784,) + (512,) * d + (10,), 128) for d in (1, 2, 3, 4, 6)],
    }
    results: dict[str, list] = {}
    rows = []
    for sweep, points in sweeps.items():
        results[sweep] = []
        for sizes, batch in points:
            r = measure(sizes, batch, device, args.repeats)
            value = {"batch": batch, "width": sizes[1], "depth": len(sizes) - 2}[sweep]
            results[sweep].append((value, r))
            rows.append([sweep, "-".join(map(str, sizes)), batch, r["relax_ms"],
                         r["samples_s"], r["effective"] / 1e9, r["peak"] / 1e9,
                         f"{100 * r['roofline']:.0f} %", f"{100 * r['executed']:.0f} %"])
            print(rows[-1], flush=True)
    print(f"free phase, {STEPS} Euler steps, Hopfield, float32")
    print(table(["sweep", "network", "batch", "time (ms)", "samples/s",
                 "effective GFLOP/s", "matmul GFLOP/s", "effective / matmul",
                 "executed / matmul"], rows))
    print(machine_note(device, args.threads))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        for ax, (sweep, points) in zip(axes, results.items(), strict=True):
            ax.plot([v for v, _ in points], [r["relax_ms"] for _, r in points], "o-")
            ax.set_xlabel({"batch": "batch (784-500-10)", "width": "hidden width (batch 128)",
                           "depth": "hidden layers of 512 (batch 128)"}[sweep])
            ax.set_ylabel(f"free phase, {STEPS} steps (ms)")
            if sweep != "depth":
                values = [v for v, _ in points]
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xticks(values, [str(v) for v in values])  # the measured points only
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, alpha=0.3)
        threads = f"{args.threads} thread" + ("s" if args.threads != 1 else "")
        fig.suptitle(f"neuroeq torch engine ({device.type}, {threads}, float32)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
