"""The cost of evaluating a model's own equations: the general Euler map and the
linearisation behind AsymEP and Dyadic EP, each against the form it replaced.

In-process A/B comparisons, interleaved (one call of each per round, medians and the
paired ratio over ``--repeats`` rounds), on FHN (the model without bounds, so its steps
take the general updates):

1. **Linearisation** (:class:`neuroeq.linearization.Linearization`): the neurons'
   elementwise partials by reverse mode (:func:`~neuroeq.linearization.elementwise_partials`)
   against forward mode (``torch.func.jvp``, one tangent per input: the former method,
   :func:`forward_mode_partials` below).
2. **A Dyadic EP estimate**, which linearises at every step of its coupled relaxation, with
   either form of the partials.
3. **An FHN Euler step**: ``ρ`` and ``ρ'`` evaluated together with their common ``tanh``
   once, and sums compiled as fused kernels (``add(alpha=)``, ``addcmul``), against the two
   evaluated apart and sums as plain operator trees.
4. **The stability check** after an accelerated free phase (FHN 784-256-10, batch 128,
   float64, the convergence table's net): power iteration with the exact Euler-map
   Jacobian ``(I + dt·J) u`` (:class:`~neuroeq.linearization.EulerJacobian`) against
   finite differences of the map, alone and inside a whole Anderson relaxation (on the
   first 128 MNIST training images when ``--data-root`` holds them, as the convergence
   table).
5. **The stability check on Hopfield** (784-500-10, batch 128, float64) at the fixed
   point of the Gauss-Seidel sweep (``ω = 2``): power iteration on the certifying layer
   sweep (:func:`~neuroeq.engines.fast_step.certifying_sweep`, whose contraction decides
   the stability of this symmetric network's dynamics) against finite differences of the
   Euler map, alone and inside a whole relaxation.

Usage (from the repository root):

    python bench/model_kernels.py [--threads 1] [--repeats 15] [--checks-only]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from common import add_data_root, machine_note, parser, setup, table
from convergence import inputs as convergence_inputs

from neuroeq import Network, TorchEngine, compiled_model, expressions, linearization
from neuroeq.engines import fast_step, torch_engine
from neuroeq.engines.fast_step import EulerMap
from neuroeq.rules import DyadicEP


def forward_mode_partials(function: Callable, primals: tuple[torch.Tensor, ...]):
    """``elementwise_partials``' result by forward mode: one ``torch.func.jvp`` per input."""
    zeros = tuple(torch.zeros_like(p) for p in primals)
    columns, values = [], None
    with torch.enable_grad():
        for k in range(len(primals)):
            tangents = zeros[:k] + (torch.ones_like(primals[k]),) + zeros[k + 1:]
            values, column = torch.func.jvp(function, primals, tangents)
            columns.append(column if isinstance(column, tuple) else (column,))
    values = values if isinstance(values, tuple) else (values,)
    partials = [[columns[k][v] for k in range(len(primals))] for v in range(len(values))]
    return values, partials


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int
                ) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one call of each per round (after a warm-up)."""
    for run in candidates.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def row(label: str, times: dict[str, list[float]], unit: float, unit_name: str) -> list:
    new, old = times["new"], times["old"]
    paired = statistics.median(a / b for a, b in zip(new, old, strict=True))
    return [label, f"{_figure(statistics.median(old) / unit)} {unit_name}",
            f"{_figure(statistics.median(new) / unit)} {unit_name}", f"{paired:.3f}"]


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def linearization_rows(sizes, batch, dtype, repeats) -> list[list]:
    network = Network("fhn", sizes, seed=0, dtype=dtype, coupling="asymmetric")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, sizes[0], generator=generator, dtype=dtype)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator)
    with torch.no_grad():
        state = TorchEngine(tol=0.0, max_steps=50).relax(network, x).state
        drive = network.drive(x)
    reverse = linearization.elementwise_partials

    def with_partials(partials, run):
        def call():
            linearization.elementwise_partials = partials
            try:
                return run()
            finally:
                linearization.elementwise_partials = reverse
        return call

    def linearise():
        return linearization.Linearization(network, state, drive)

    times = interleaved({"new": with_partials(reverse, linearise),
                         "old": with_partials(forward_mode_partials, linearise)}, repeats)
    name = "-".join(map(str, sizes))
    rows = [row(f"Linearization, FHN {name}, batch {batch}", times, 1e-3, "ms")]
    rule = DyadicEP(beta=0.01, engine=TorchEngine(tol=1e-6, max_steps=400,
                                                  on_failure="ignore"))

    def estimate():
        return rule.estimate(network, (x, y), write_grad=False)

    times = interleaved({"new": with_partials(reverse, estimate),
                         "old": with_partials(forward_mode_partials, estimate)},
                        max(3, repeats // 5))
    rows.append(row(f"Dyadic EP estimate, FHN {name}, batch {batch}", times, 1e-3, "ms"))
    return rows


def euler_step_row(sizes, batch, dtype, repeats, steps: int = 100) -> list:
    """One relaxation of ``steps`` Euler steps per call, each form on its own network (the
    maps are compiled per network on first use, so each keeps the form it was built with)."""
    fused = expressions._linear_combination
    together = compiled_model.CompiledModel.rho_and_prime

    def apart(self, coupled):
        return self.rho(coupled), self.rho_prime(coupled)

    def build(new: bool) -> Callable[[], object]:
        expressions._linear_combination = fused if new else (lambda expr, where: None)
        try:
            network = Network("fhn", sizes, seed=0, dtype=dtype)  # compiles the model
        finally:
            expressions._linear_combination = fused
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(batch, sizes[0], generator=generator, dtype=dtype)
        engine = TorchEngine(tol=0.0, max_steps=steps)

        def run():
            compiled_model.CompiledModel.rho_and_prime = together if new else apart
            expressions._linear_combination = fused if new else (lambda expr, where: None)
            try:
                with torch.no_grad():
                    return engine.relax(network, x)
            finally:
                compiled_model.CompiledModel.rho_and_prime = together
                expressions._linear_combination = fused
        return run

    times = interleaved({"new": build(True), "old": build(False)}, repeats)
    name = "-".join(map(str, sizes))
    return row(f"FHN Euler step, {name}, batch {batch}, {str(dtype).split('.')[-1]}",
               times, 1e-6 * steps, "µs")


def stability_check_rows(sizes, batch, dtype, repeats, data_root: str) -> list[list]:
    """The check alone at a converged free state, and a whole Anderson relaxation with it
    (``tol = 1e-6``), with the exact Jacobian products (new) or finite differences (old), on
    the convergence table's inputs (the first MNIST images where the data are found)."""
    network = Network("fhn", sizes, seed=0, dtype=dtype)
    x = convergence_inputs(torch.device("cpu"), data_root)[0][:batch].to(dtype)
    engine = TorchEngine(tol=1e-6, max_steps=100_000, solver="anderson")
    exact = torch_engine._euler_jacobian
    with torch.no_grad():
        point = TorchEngine(tol=1e-6, max_steps=100_000, solver="anderson",
                            stability_iterations=0).relax(network, x).state
        step = EulerMap(network, engine.settings(network)[0], network.drive(x))

    def using(products: Callable, run: Callable) -> Callable[[], object]:
        def call():
            torch_engine._euler_jacobian = products
            try:
                with torch.no_grad():
                    return run()
            finally:
                torch_engine._euler_jacobian = exact
        return call

    def differences(*args):
        return None

    def check():
        return engine._unstable(network, step, point, point.shape, None, str)

    def relax():
        return engine.relax(network, x)

    name = "-".join(map(str, sizes))
    kind = str(dtype).split(".")[-1]
    rows = []
    for label, run in ((f"Stability check (41 products), FHN {name}, batch {batch}, {kind}",
                        check),
                       (f"Anderson relaxation with the check, FHN {name}, batch {batch}, "
                        f"{kind}", relax)):
        times = interleaved({"new": using(exact, run), "old": using(differences, run)},
                            repeats)
        rows.append(row(label, times, 1e-3, "ms"))
    return rows


def sweep_certificate_rows(sizes, batch, dtype, repeats, data_root: str) -> list[list]:
    """The check alone at the Gauss-Seidel fixed point of Hopfield (``ω = 2``,
    ``tol = 1e-6``), and the whole relaxation with it: power iteration on the certifying
    layer sweep (new) or finite differences of the Euler map (old), same inputs as above."""
    network = Network("hopfield", sizes, seed=0, dtype=dtype)
    x = convergence_inputs(torch.device("cpu"), data_root)[0][:batch].to(dtype)
    engine = TorchEngine(tol=1e-6, max_steps=100_000, solver="gauss_seidel",
                         over_relaxation=2.0)
    certifying = fast_step.certifying_sweep
    with torch.no_grad():
        point = TorchEngine(tol=1e-6, max_steps=100_000, solver="gauss_seidel",
                            over_relaxation=2.0, stability_iterations=0).relax(network, x).state
        step = EulerMap(network, engine.settings(network)[0], network.drive(x))

    def using(choice: Callable, run: Callable) -> Callable[[], object]:
        def call():
            fast_step.certifying_sweep = choice
            try:
                with torch.no_grad():
                    return run()
            finally:
                fast_step.certifying_sweep = certifying
        return call

    def euler_map(step):
        return None

    def check():
        return engine._unstable(network, step, point, point.shape, network.project, str)

    def relax():
        return engine.relax(network, x)

    counts = {label: using(choice, check)()[1]
              for label, choice in (("new", certifying), ("old", euler_map))}
    name = "-".join(map(str, sizes))
    kind = str(dtype).split(".")[-1]
    rows = []
    for label, run in ((f"Stability check ({counts['old']} → {counts['new']} products), "
                        f"Hopfield {name}, batch {batch}, {kind}", check),
                       (f"Gauss-Seidel (ω = 2) relaxation with the check, Hopfield {name}, "
                        f"batch {batch}, {kind}", relax)):
        times = interleaved({"new": using(certifying, run), "old": using(euler_map, run)},
                            repeats)
        rows.append(row(label, times, 1e-3, "ms"))
    return rows


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    add_data_root(p)
    p.add_argument("--checks-only", action="store_true",
                   help="only the stability-check comparisons (items 4 and 5)")
    args = p.parse_args()
    if setup(args).type != "cpu":  # its kernels and their paired timings run on the CPU
        raise SystemExit(f"model_kernels.py measures CPU kernels only; --device {args.device} "
                         "would time the CPU under another name (run it without --device)")
    rows = []
    if not args.checks_only:
        for sizes, batch, dtype in (((8, 6, 3), 4, torch.float64),
                                    ((784, 500, 10), 128, torch.float32)):
            rows.extend(linearization_rows(sizes, batch, dtype, args.repeats))
            rows.append(euler_step_row(sizes, batch, dtype, args.repeats))
            print(rows[-1], flush=True)
    rows.extend(stability_check_rows((784, 256, 10), 128, torch.float64, args.repeats,
                                     args.data_root))
    rows.extend(sweep_certificate_rows((784, 500, 10), 128, torch.float64, args.repeats,
                                       args.data_root))
    print(table(["what", "before", "now", "paired ratio (now / before)"], rows))
    print(machine_note(torch.device("cpu"), args.threads))


if __name__ == "__main__":
    main()
