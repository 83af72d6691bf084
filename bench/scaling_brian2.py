"""Brian2 engine scaling (batch, width, depth) beside the torch engine, with a plot.

Each point times one free phase of a FitzHugh-Nagumo network: 300 Euler steps of
``dt = 0.1 ms``, no early stop, float64, in the Brian2 engine (Cython runtime; the batch as
block-diagonal copies in one ``NeuronGroup`` per layer, the clamped input as a constant
current) and in the torch engine (one thread, as Brian2's runtime) on the same network and
inputs. Sweeps: batch 1-256 on 784-256-10; hidden width 64-1024 at batch 16; one to three
hidden layers of 256 at batch 16. Brian2 compiles each new set of equations once (cached
under the project's cache directory); the warm-up call before the timed repeats absorbs it.

Usage (from the repository root):

    python bench/scaling_brian2.py [--repeats 2] [--plot bench/scaling_brian2.png]
"""

from __future__ import annotations

import torch
from common import best_time, machine_note, parser, setup, table

from neuroeq import Network, TorchEngine
from neuroeq.engines.brian2_engine import Brian2Engine

STEPS = 300
SWEEPS = {
    "batch": [((784, 256, 10), b) for b in (1, 4, 16, 64, 256)],
    "width": [((784, w, 10), 16) for w in (64, 128, 256, 512, 1024)],
    "depth": [((784,) + (256,) * d + (10,), 16) for d in (1, 2, 3)],
}
AXIS = {"batch": "batch (784-256-10)", "width": "hidden units (batch 16)",
        "depth": "hidden layers of 256 (batch 16)"}


def measure(sizes: tuple[int, ...], batch: int, repeats: int) -> dict:
    """Seconds per free phase in both engines, and the synapses Brian2 simulates."""
    network = Network("fhn", sizes, seed=0)
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    brian = Brian2Engine(target="cython", max_steps=STEPS, tol=0.0, check_every=STEPS)
    engine = TorchEngine(max_steps=STEPS, tol=0.0, check_every=STEPS)
    device = torch.device("cpu")
    brian_s = best_time(lambda: brian.relax(network, x), device, repeats)
    with torch.no_grad():
        torch_s = best_time(lambda: engine.relax(network, x), device, repeats)
    # the clamped input is a current, not synapses; each recurrent pair is one Synapses
    # object carrying both directions
    synapses = batch * sum(a * b for a, b in zip(sizes[1:-1], sizes[2:], strict=True))
    return {"brian_ms": brian_s * 1e3, "torch_ms": torch_s * 1e3,
            "brian_sps": batch / brian_s, "torch_sps": batch / torch_s,
            "synapses": synapses, "neurons": batch * sum(sizes[1:])}


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (sweep, points) in zip(axes, results.items(), strict=True):
        values = [v for v, _ in points]
        ax.plot(values, [r["brian_ms"] for _, r in points], "o-", label="Brian2 (cython)")
        ax.plot(values, [r["torch_ms"] for _, r in points], "s-", label="torch (1 thread)")
        ax.set_xlabel(AXIS[sweep])
        ax.set_ylabel(f"free phase, {STEPS} steps (ms)")
        ax.set_yscale("log")
        if sweep != "depth":
            ax.set_xscale("log")
            ax.set_xticks(values, [str(v) for v in values])
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(values)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("FitzHugh-Nagumo free phase: Brian2 engine and torch engine (float64)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.set_defaults(threads=1, repeats=2)
    p.add_argument("--plot", default="bench/scaling_brian2.png")
    args = p.parse_args()
    if setup(args).type != "cpu":  # Brian2 runs on the CPU, and torch beside it here
        raise SystemExit("scaling_brian2.py compares the engines on the CPU; --device cuda "
                         "applies to the torch benchmarks (bench/scaling.py)")
    results: dict[str, list] = {}
    rows = []
    for sweep, points in SWEEPS.items():
        results[sweep] = []
        for sizes, batch in points:
            r = measure(sizes, batch, args.repeats)
            value = {"batch": batch, "width": sizes[1], "depth": len(sizes) - 2}[sweep]
            results[sweep].append((value, r))
            rows.append([sweep, "-".join(map(str, sizes)), batch, f"{r['synapses']:,}",
                         r["brian_ms"], r["brian_sps"], r["torch_ms"], r["torch_sps"],
                         f"{r['brian_ms'] / r['torch_ms']:.1f}",
                         f"{1e6 * r['brian_ms'] / STEPS / (r['synapses'] + r['neurons']):.2f}"])
            print(rows[-1], flush=True)
    print(f"free phase, {STEPS} Euler steps of 0.1 ms, FitzHugh-Nagumo, float64")
    print(table(["sweep", "network", "batch", "synapses (Brian2)", "Brian2 (ms)",
                 "Brian2 samples/s", "torch (ms)", "torch samples/s", "Brian2 / torch time",
                 "Brian2 ns per (synapse + neuron) per step"], rows))
    print(machine_note(torch.device("cpu"), args.threads))
    plot(results, args.plot)


if __name__ == "__main__":
    main()
