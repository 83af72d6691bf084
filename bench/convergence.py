"""Steps and time to reach tol for Euler versus Anderson acceleration, and warm starts.

Free phase of a Hopfield 784-500-10 net and an FHN 784-256-10 net (model defaults for dt,
float64 so that tol 1e-6 sits far above rounding), batch 128, inputs the first 128 MNIST
training images (random images of the same shape when MNIST is not readable). Steps are map
evaluations (one Euler step each; Anderson's count includes its stability check). Warm
starts: the nudged phase started from the free state versus from the initial state, and the
free phase after one SGD step started from the previous free state (persistent particles)
versus from the initial state.

Usage (from the repository root):

    python bench/convergence.py [--device cpu|cuda] [--threads 2] [--tol 1e-6]
"""

from __future__ import annotations

import torch
from common import best_time, machine_note, parser, setup, table

from neuroeq import Network, TorchEngine
from neuroeq.rules import ClassicEP

NETS = {"hopfield": (784, 500, 10), "fhn": (784, 256, 10)}


def inputs(device, root: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from neuroeq.data import load_dataset
        data = load_dataset("mnist", "train", root=root, limit=128)
        return data.x.to(device), data.y.to(device), "MNIST"
    except Exception:
        generator = torch.Generator().manual_seed(0)
        return (torch.rand(128, 784, generator=generator).to(device),
                torch.randint(0, 10, (128,), generator=generator).to(device), "random")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--data-root", default="../shared/data")
    args = p.parse_args()
    device = setup(args)
    x, y, source = inputs(device, args.data_root)
    x, rows, warm = x.double(), [], []
    for model, sizes in NETS.items():
        network = Network(model, sizes, dtype=torch.float64, device=device, seed=0)
        results = {}
        for solver in ("euler", "anderson"):
            engine = TorchEngine(tol=args.tol, max_steps=100_000, solver=solver)
            with torch.no_grad():
                result = engine.relax(network, x)
                seconds = best_time(lambda e=engine, n=network: e.relax(n, x), device, args.repeats)
            extra = engine.stability_iterations if solver == "anderson" else 0
            results[solver] = (result, seconds, extra)
        euler, anderson = results["euler"], results["anderson"]
        diff = float((euler[0].state - anderson[0].state).abs().max())
        for solver, (result, seconds, extra) in results.items():
            rows.append([f"{model} {'-'.join(map(str, sizes))}", solver,
                         result.n_steps + extra, seconds * 1e3,
                         f"{(result.n_steps + extra) / (euler[0].n_steps):.2f}",
                         f"{seconds / euler[1]:.2f}", f"{diff:.1e}"])
        # warm starts (Euler, the dynamics themselves)
        engine = TorchEngine(tol=args.tol, max_steps=100_000)
        with torch.no_grad():
            free = engine.relax(network, x)
            from_free = engine.relax(network, x, y=y, beta=0.5, init=free.state)
            from_init = engine.relax(network, x, y=y, beta=0.5)
        rule = ClassicEP(beta=0.5, engine=engine)
        rule.estimate(network, (x, y), free=free)
        with torch.no_grad():
            for param in network.parameters():
                if param.grad is not None:
                    param -= 0.05 * param.grad
            persistent = engine.relax(network, x, init=free.state)
            cold = engine.relax(network, x)
        warm.append([model, "nudged phase", from_init.n_steps, from_free.n_steps])
        warm.append([model, "free phase after an SGD step", cold.n_steps, persistent.n_steps])
    print(f"tol {args.tol:g}, batch 128, float64, inputs: {source}")
    print(table(["network", "solver", "steps (map evaluations)", "time (ms)",
                 "steps / Euler", "time / Euler", "max |Δs| vs Euler"], rows))
    print()
    print(table(["network", "phase", "steps from the initial state", "steps warm-started"],
                warm))
    print(machine_note(device, args.threads))


if __name__ == "__main__":
    main()
