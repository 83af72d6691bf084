"""Steps and time to reach tol for Euler versus Anderson and Gauss-Seidel, and warm starts.

Free phase of a Hopfield 784-500-10 net and an FHN 784-256-10 net (model defaults for dt,
float64 so that tol 1e-6 sits far above rounding), batch 128, inputs the first 128 MNIST
training images (random images of the same shape when MNIST is not readable). Steps are map
evaluations (one Euler step each). Anderson is measured for several memories ``m`` and
mixing parameters ``ω`` (it extrapolates ``Π(s + ω(G(s) - s))``); the Gauss-Seidel layer
sweep for several steps ``ω·dt`` (a sweep is one evaluation, and one Euler map evaluation
checks the engine's criterion at the end). Both without and with their stability check (at
most 40 power iterations on the map's Jacobian, each one map evaluation, after convergence:
the default, which catches fixed points that the dynamics leave; it stops once every
sample's perturbation has shrunk below its certificate); the evaluations given with the
check are the engine's own count, which includes the check's. Times are the best of
``--repeats`` interleaved rounds, one relaxation of every variant per round. Warm starts:
the nudged phase started from the free state versus from the initial state, and the free
phase after one SGD step started from the previous free state (persistent particles)
versus from the initial state. ``--dense-inputs`` adds the FHN net on dense inputs (every
pixel uniform in [0, 1]), where some of Anderson's extrapolations land where the map blows
up: Euler against Anderson for each memory, without the check, with the samples that fell
back counted.

Usage (from the repository root):

    python bench/convergence.py [--device cpu|cuda] [--threads 2] [--tol 1e-6]
        [--memories 3 5 10] [--mixings 1 1.5] [--over-relaxations 1 2] [--dense-inputs]
"""

from __future__ import annotations

import sys

import torch
from common import add_data_root, best_time, machine_note, parser, setup, table

from neuroeq import Network, RelaxationError, TorchEngine
from neuroeq.errors import NeuroEQError
from neuroeq.rules import ClassicEP

NETS = {"hopfield": (784, 500, 10), "fhn": (784, 256, 10)}
STABILITY_ITERATIONS = 40  # the engine's default check (at most), measured separately


def inputs(device, root: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first 128 MNIST training images under ``root`` (``None``: ``$NEUROEQ_DATA_DIR``),
    or random images of that shape, with a note on stderr saying why."""
    try:
        from neuroeq.data import load_dataset
        data = load_dataset("mnist", "train", root=root, limit=128)
        return data.x.to(device), data.y.to(device), "MNIST"
    except NeuroEQError as exc:
        print(f"note: random images of MNIST's shape instead of MNIST ({exc}); the counts "
              "differ from those measured on MNIST", file=sys.stderr)
        generator = torch.Generator().manual_seed(0)
        return (torch.rand(128, 784, generator=generator).to(device),
                torch.randint(0, 10, (128,), generator=generator).to(device), "random")


def dense_input_rows(device, tol: float, memories: list[int], repeats: int) -> list[list]:
    """Euler and Anderson (no stability check) on FHN 784-256-10 with dense inputs."""
    network = Network("fhn", NETS["fhn"], dtype=torch.float64, device=device, seed=0)
    x = torch.rand(128, NETS["fhn"][0], generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64).to(device)
    rows, euler = [], None
    for label, options in [("euler", {})] + [
            (f"anderson m={m}", {"solver": "anderson", "anderson_memory": m,
                                 "stability_iterations": 0}) for m in memories]:
        engine = TorchEngine(tol=tol, max_steps=100_000, **options)
        with torch.no_grad():
            try:
                result = engine.relax(network, x)
            except RelaxationError as error:
                rows.append([label, "-", "-", "-", f"{error.kind}: samples {error.samples}"])
                continue
            seconds = best_time(lambda e=engine: e.relax(network, x), device, repeats)
        euler = euler or (result, seconds)
        steps = result.steps.double()
        rows.append([label, result.n_steps, f"{steps.median():.0f}", f"{seconds * 1e3:.0f}",
                     f"settled; largest state difference from Euler "
                     f"{float((result.state - euler[0].state).abs().max()):.1e}"])
    return rows


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--tol", type=float, default=1e-6)
    add_data_root(p)
    p.add_argument("--memories", type=int, nargs="+", default=[3, 5, 10],
                   help="Anderson memories m to measure")
    p.add_argument("--mixings", type=float, nargs="+", default=[1.0, 1.5],
                   help="Anderson mixing parameters ω to measure (each with every memory)")
    p.add_argument("--over-relaxations", type=float, nargs="+", default=[1.0, 2.0],
                   help="Gauss-Seidel sweep steps ω·dt to measure")
    p.add_argument("--dense-inputs", action="store_true",
                   help="also run FHN on dense inputs (Anderson's fallback to the dynamics)")
    args = p.parse_args()
    device = setup(args)
    x, y, source = inputs(device, args.data_root)
    x, rows, warm = x.double(), [], []
    for model, sizes in NETS.items():
        network = Network(model, sizes, dtype=torch.float64, device=device, seed=0)
        variants = [("euler", {"solver": "euler"})] + [
            (f"anderson m={m} ω={w:g}",
             {"solver": "anderson", "anderson_memory": m, "anderson_mixing": w})
            for w in args.mixings for m in args.memories] + [
            (f"gauss-seidel ω={w:g}", {"solver": "gauss_seidel", "over_relaxation": w})
            for w in args.over_relaxations]
        engines = {}
        for label, options in variants:
            for checked in ((False,) if options["solver"] == "euler" else (False, True)):
                check = {} if options["solver"] == "euler" else \
                    {"stability_iterations": STABILITY_ITERATIONS if checked else 0}
                engines[label, checked] = TorchEngine(tol=args.tol, max_steps=100_000,
                                                      **options, **check)
        with torch.no_grad():  # (each call once: the results, and a warm-up)
            results = {key: engine.relax(network, x) for key, engine in engines.items()}
        # interleaved rounds, one call of each per round, the best kept: a slow spell of
        # the machine falls on every column instead of on whichever ran during it
        timings = dict.fromkeys(engines, float("inf"))
        for _ in range(args.repeats):
            for key, engine in engines.items():
                with torch.no_grad():
                    seconds = best_time(lambda e=engine, n=network: e.relax(n, x), device, 1,
                                        warm_up=False)
                timings[key] = min(timings[key], seconds)
        euler = (results["euler", False], timings["euler", False])
        for label, _ in variants:
            result, seconds = results[label, False], timings[label, False]
            diff = float((euler[0].state - result.state).abs().max())
            checked_time = timings.get((label, True))
            rows.append([f"{model} {'-'.join(map(str, sizes))}", label, result.n_steps,
                         f"{result.n_steps / euler[0].n_steps:.2f}", seconds * 1e3,
                         f"{seconds / euler[1]:.2f}",
                         "-" if checked_time is None else
                         f"{results[label, True].n_steps} / "
                         f"{checked_time * 1e3:.1f} / "
                         f"{checked_time / euler[1]:.2f}", f"{diff:.1e}"])
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
    print(table(["network", "solver", "steps to tol (map evaluations)", "steps / Euler",
                 "time (ms)", "time / Euler",
                 "with the stability check: evaluations / ms / time ÷ Euler",
                 "max \\|Δs\\| vs Euler"], rows))
    print()
    print(table(["network", "phase", "steps from the initial state", "steps warm-started"],
                warm))
    if args.dense_inputs:
        print()
        print(f"FHN {'-'.join(map(str, NETS['fhn']))} on dense inputs (uniform in [0, 1]), "
              f"tol {args.tol:g}, no stability check:")
        print(table(["solver", "iterations (batch)", "median sample's iterations", "time (ms)",
                     "result"], dense_input_rows(device, args.tol, args.memories,
                                                 args.repeats)))
    print(machine_note(device, args.threads))


if __name__ == "__main__":
    main()
