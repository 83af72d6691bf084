"""Evaluate a trained network (a result folder of ``neuroeq run``) on its test set in both
engines: the torch engine (the protocol's settings, whichever engine trained it) and the
Brian2 engine, with the same model,
weights, ``dt``, step budget, tolerance and steps between convergence checks. Reports each
engine's test accuracy, how often their predictions agree, the largest difference between
their stationary states, and the wall time of each (the first batch of each size is run
once untimed first, so Brian2's build and code generation are not counted).

    OMP_NUM_THREADS=1 python3 bench/evaluate_in_brian2.py results/mnist_fhn_skew

The data set is the protocol's (``NEUROEQ_DATA_DIR`` or ``data.root`` for MNIST).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from neuroeq.engines.brian2_engine import Brian2Engine
from neuroeq.errors import ConfigError, NeuroEQError
from neuroeq.protocols import build, load_protocol
from neuroeq.training.checkpoint import load_checkpoint


def _load(result: Path) -> tuple:
    """The result folder's protocol, trained network, a torch engine with its ``[engine]``
    settings (also for a folder trained in Brian2: the comparison is always torch against
    Brian2) and its test set."""
    protocol = load_protocol(result / "protocol.toml")
    config = protocol.config
    if config["engine"]["name"] == "spiking":
        raise ConfigError(f"{result} was trained with the spiking engine, which has no "
                          "deterministic torch counterpart to compare with")
    model = build.build_model(config)
    network = build.build_network(config, model)
    network.load_state_dict(load_checkpoint(result / "checkpoint.pt")["network"])
    as_torch = {**config, "engine": {**config["engine"], "name": "torch"}}
    torch_engine = dataclasses.replace(build.build_engine(as_torch), on_failure="ignore")
    _, test = build.build_data(config)
    return protocol, network, torch_engine, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a result folder with protocol.toml and "
                                                  "checkpoint.pt")
    parser.add_argument("--limit", type=int, default=None, help="first N test samples only")
    parser.add_argument("--batch", type=int, default=250, help="samples per relaxation")
    parser.add_argument("--target", default="cython", choices=("cython", "numpy"))
    args = parser.parse_args()

    try:
        protocol, network, torch_engine, test = _load(args.result)
    except NeuroEQError as error:
        sys.exit(f"evaluate_in_brian2: {error}")
    brian2_engine = Brian2Engine(target=args.target, dt=torch_engine.dt,
                                 max_steps=torch_engine.max_steps, tol=torch_engine.tol,
                                 check_every=torch_engine.check_every, on_failure="ignore")
    n = len(test) if args.limit is None else min(args.limit, len(test))

    correct = {"torch": 0, "brian2": 0}
    seconds = {"torch": 0.0, "brian2": 0.0}
    agree, max_diff = 0, 0.0
    warmed: set[tuple[str, int]] = set()
    with torch.no_grad():
        for start in tqdm(range(0, n, args.batch), desc="test batches"):
            x = test.x[start:min(start + args.batch, n)].to(network.dtype)
            y = test.y[start:start + len(x)]
            predictions, states = {}, {}
            for name, engine in (("torch", torch_engine), ("brian2", brian2_engine)):
                if (name, len(x)) not in warmed:  # builds the simulation of this batch size
                    engine.relax(network, x)
                    warmed.add((name, len(x)))
                began = time.perf_counter()
                state = engine.relax(network, x).state
                seconds[name] += time.perf_counter() - began
                states[name] = state.to(torch.float64)
                predictions[name] = network.readout.predict(network.output_rates(state))
                correct[name] += int((predictions[name] == y).sum())
            agree += int((predictions["torch"] == predictions["brian2"]).sum())
            max_diff = max(max_diff, float((states["torch"] - states["brian2"]).abs().max()))
    print(f"{protocol.name}: {n} test samples, dt {torch_engine.settings(network)[0] * 1e3:g} "
          f"ms, budget {torch_engine.settings(network)[1]} steps, tol "
          f"{torch_engine.settings(network)[2]:g}")
    for name in ("torch", "brian2"):
        print(f"  {name:6s} test accuracy {100 * correct[name] / n:.2f} %  "
              f"({n / seconds[name]:.1f} samples/s, {seconds[name]:.0f} s)")
    print(f"  predictions agree on {100 * agree / n:.2f} % of samples; "
          f"max |s_torch - s_brian2| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
