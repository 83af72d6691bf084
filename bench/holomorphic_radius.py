"""Holomorphic EP's error against the nudge radius r and the number of points N.

The estimate's error is ``O((r/R)^N)`` while ``r`` lies inside the radius of analyticity
``R`` of ``β ↦ s_β``; from two point counts at one radius, ``R ≈ r (e_N / e_2N)^(1/N)``.
Outside ``R`` the error stops falling geometrically with ``N``. Prints a Markdown table of
relative errors against implicit differentiation and the estimated ``R``.

Usage (from the repository root):

    python bench/holomorphic_radius.py [--model hopfield_smooth] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

from neuroeq import Network, RelaxationError, TorchEngine
from neuroeq.rules import HolomorphicEP, ImplicitDifferentiation

RADII = (0.1, 0.2, 0.3, 0.35, 0.4, 0.5)
POINTS = (8, 16, 32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="hopfield_smooth")
    p.add_argument("--sizes", default="20,16,5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    sizes = [int(v) for v in args.sizes.split(",")]
    network = Network(args.model, sizes, seed=args.seed, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1000 + args.seed)  # the gradient check's batch
    x = torch.rand(4, sizes[0], generator=generator, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (4,), generator=generator)
    engine = TorchEngine(tol=1e-12, max_steps=100_000)
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, x)
    true = ImplicitDifferentiation(engine).estimate(network, (x, y), free=free,
                                                    write_grad=False).flat(names)
    print(f"{args.model} {args.sizes}, seed {args.seed}: relative error of holomorphic EP "
          f"(torch {torch.__version__}, 1 thread)\n")
    print("| r | " + " | ".join(f"N = {n}" for n in POINTS) + " | R from N = 8 → 16 |")
    print("|---|" + "---|" * (len(POINTS) + 1))
    for r in RADII:
        errors = []
        for n in POINTS:
            try:
                found = HolomorphicEP(r, engine, points=n).estimate(
                    network, (x, y), free=free, write_grad=False).flat(names)
                errors.append(float((found - true).norm() / true.norm()))
            except RelaxationError:  # r beyond the region where the complex phases settle
                errors.append(float("nan"))
        finite = errors[1] > 0 and errors[0] == errors[0]
        radius = r * (errors[0] / errors[1]) ** (1 / POINTS[0]) if finite else float("nan")
        cells = " | ".join("diverged" if e != e else f"{e:.1e}" for e in errors)
        print(f"| {r} | {cells} | {radius:.2f} |", flush=True)


if __name__ == "__main__":
    main()
