"""Brian2 ``cpp_standalone`` with ``run_args`` against the engine's Cython runtime.

The same FitzHugh-Nagumo 784-256-10 objects as :class:`Brian2Engine` (one ``NeuronGroup``
per layer holding the batch as block-diagonal copies, the clamped input as a constant
current), built once for ``cpp_standalone`` and compiled once; each phase is then one
``device.run(run_args={...})`` that writes new weights, input currents and initial states
into the compiled binary without recompiling (Brian2's ``run_args``). Timed per phase
(300 Euler steps of 0.1 ms, no early stop), against ``Brian2Engine(target="cython")`` on
the same network and inputs, whose final states it must match.

Standalone mode is process-wide in Brian2, so this script runs on its own (a fresh
process); the project directory lives in the project's cache directory.

Usage (from the repository root):

    python bench/brian2_standalone.py [--batch 64] [--repeats 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from neuroeq import Network
from neuroeq.engines.brian2_common import cache_directory
from neuroeq.engines.brian2_engine import Brian2Engine, _flat, _Simulation

SIZES = (784, 256, 10)
STEPS = 300


def _inputs(network: Network, batch: int, seed: int) -> tuple[torch.Tensor, dict]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, SIZES[0], generator=generator, dtype=torch.float64)
    return x, network.drive(x)


def runtime_phase(network: Network, batch: int, seeds: list[int], repeats: int
                  ) -> tuple[float, list[torch.Tensor]]:
    """Best seconds per phase of the Cython runtime engine, and its final states."""
    engine = Brian2Engine(target="cython", max_steps=STEPS, tol=0.0, check_every=STEPS)
    states = []
    for seed in seeds:  # the first call also builds and compiles (not timed)
        x, _ = _inputs(network, batch, seed)
        states.append(engine.relax(network, x).state)
    best = float("inf")
    for _ in range(repeats):
        for seed in seeds:
            x, _ = _inputs(network, batch, seed)
            start = time.perf_counter()
            engine.relax(network, x)
            best = min(best, time.perf_counter() - start)
    return best, states


def standalone_phase(network: Network, batch: int, seeds: list[int], repeats: int,
                     threads: int) -> tuple[float, float, list[torch.Tensor]]:
    """Build and compile once; then seconds per ``device.run(run_args=...)`` phase."""
    import brian2

    directory = cache_directory() / "standalone_bench"
    brian2.set_device("cpp_standalone", directory=str(directory), build_on_run=False)
    brian2.prefs.devices.cpp_standalone.openmp_threads = threads
    simulation = _Simulation.__new__(_Simulation)
    dt = Brian2Engine().settings(network)[0]
    simulation.build_objects(network, batch, dt, asym=False)
    brian2.device.apply_run_args()  # run_args are applied here, after the set-up code
    net = brian2.Network(*simulation.objects())
    net.run(STEPS * dt * brian2.second, namespace={})
    start = time.perf_counter()
    brian2.device.build(directory=str(directory), compile=True, run=False)
    compile_seconds = time.perf_counter() - start

    params = network.dynamics_parameters()
    weights = {}
    for projection in simulation.projections:
        matrix = network.matrix(projection.edge, params).detach()
        values = matrix.reshape(-1).numpy().astype(np.float64)[projection.keep]
        weights[projection.synapses.w_syn] = values[projection.weight_index]
    initial = network.initial_state(batch)

    def run_args(seed: int) -> dict:
        _, drive = _inputs(network, batch, seed)
        args = dict(weights)
        for layer, group in simulation.groups.items():
            bias = params[f"b{layer}"].detach().numpy().astype(np.float64)
            args[group.bias] = np.tile(bias, batch)
            current = drive.get(layer)
            args[group.I_in] = (np.zeros(group.N) if current is None
                                else _flat(current, batch, group.N))
        for block in network.blocks:
            group = simulation.groups[block.layer]
            args[getattr(group, block.variable)] = _flat(
                initial[:, block.start:block.stop], batch, group.N)
        for layer, group in simulation.groups.items():  # rho (and rho') of the initial state
            coupled = _flat(network.coupled(initial, layer), batch, group.N)
            for name, rate in simulation.rates(coupled).items():
                args[getattr(group, name)] = rate
        return args

    def final_state() -> torch.Tensor:
        state = torch.empty(batch, network.state_size, dtype=torch.float64)
        for block in network.blocks:
            values = np.asarray(getattr(simulation.groups[block.layer], block.variable)[:])
            state[:, block.start:block.stop] = torch.from_numpy(
                values.reshape(batch, block.stop - block.start).copy())
        return state

    states = []
    for seed in seeds:
        brian2.device.run(run_args=run_args(seed), with_output=False)
        states.append(final_state())
    best = float("inf")
    for _ in range(repeats):
        for seed in seeds:
            start = time.perf_counter()
            brian2.device.run(run_args=run_args(seed), with_output=False)
            final_state()
            best = min(best, time.perf_counter() - start)
    return best, compile_seconds, states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="OpenMP threads of the standalone binary (0: none)")
    args = p.parse_args()
    torch.set_num_threads(1)
    network = Network("fhn", SIZES, seed=0, dtype=torch.float64)
    seeds = [1, 2]
    runtime, runtime_states = runtime_phase(network, args.batch, seeds, args.repeats)
    standalone, compile_seconds, standalone_states = standalone_phase(
        network, args.batch, seeds, args.repeats, args.threads)
    difference = max(float((a - b).abs().max())
                     for a, b in zip(runtime_states, standalone_states, strict=True))
    print(f"FHN {'-'.join(map(str, SIZES))}, batch {args.batch}, {STEPS} Euler steps of "
          "0.1 ms per phase, float64, best of "
          f"{args.repeats} x {len(seeds)} phases\n")
    print("| Brian2 mode | seconds per phase | samples/s | one-time build |")
    print("|---|---:|---:|---|")
    print(f"| runtime, Cython (`Brian2Engine`) | {runtime:.3f} | {args.batch / runtime:.1f} "
          "| compiled once, cached |")
    print(f"| cpp_standalone + `run_args` ({args.threads or 'no'} OpenMP threads) | "
          f"{standalone:.3f} | {args.batch / standalone:.1f} | {compile_seconds:.0f} s "
          "compile |")
    print(f"\nlargest state difference between the two: {difference:.1e}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: CPU ({os.cpu_count()} cores); Python {platform.python_version()}; load "
          f"average {load:.2f} at the end")


if __name__ == "__main__":
    main()
