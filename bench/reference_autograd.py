"""neuroeq's torch engine against the public EP code's relaxation method.

The reference method (Laborieux et al., github.com/Laborieux-Axel/Equilibrium-Propagation,
``P_MLP``), written here from its description: a primitive function
``Φ(x, s) = Σ_l Σ_i (W_l s_{l-1} + b_l)_i s_{l,i} - β C(s_out)`` and, at every step,
``s ← ρ(∂Φ/∂s)`` with ``∂Φ/∂s`` from ``torch.autograd.grad`` (so ``W_1 x`` is recomputed at
every step, with a graph); the update is ``(Φ(s_β) - Φ(s*)) / (0 - β)`` back-propagated into
``p.grad``. With ``ρ = clip(·, 0, 1)`` this is exactly neuroeq's Hopfield neuron at
``dt = τ`` (``s ← Π(ρ'(s)(I_syn + b))``), so both start from the same weights and the script
checks that they reach the same states before timing them.

Timed: samples/s of one full EP training step (free phase, nudged phase, weight update,
``optimizer.step()``), batch 128, float32, the best of ``--repeats`` interleaved rounds;
beside them the same step hand-written for this one neuron (:class:`ClosedFormSketch`),
and the ratio of the two methods' matmul FLOPs (:func:`matmul_flops`, from the shapes):
the speed-up that running every matmul at one rate would give. ``--mnist-epoch`` also
times one epoch of EP on MNIST (784-500-10, 20/4 steps, batch 128, float32) with
``neuroeq.training.train`` (the data are read with ``neuroeq.data.load_dataset``).
Beside the best-of speed-up, the script prints the speed-up measured within each round (the
two methods timed back to back): its median and range show how far the machine's noise
moves the figure. ``--stages`` times the stages of one 784-500-10 training step at 20 / 4
steps, neuroeq's (free phase, nudged phase, Hebbian update, readout gradient and cost,
``param.grad``, optimizer) beside the hand-written step's (free, nudged, update): medians
over interleaved rounds, to show where a general engine spends more than the floor.
``--overhead`` times the three methods on a 784-40-2 network at batch 4, where every kernel
takes about a microsecond: a training step at 1 / 1 steps is their fixed cost per training
step (Python, dispatch, checks and set-up), and the difference to 20 / 4 their cost per
Euler step. ``--phase-costs`` splits each phase of the 784-500-10 step (batch 128) into a
fixed cost and a cost per step, neuroeq's beside the hand-written step's: the medians of
relaxations of 1, 4, 8 and 16 steps (interleaved rounds) and the least-squares line through
them (intercept: the phase's cost outside its steps, ``W₁x`` included in the free phase;
slope: its cost per Euler step).

Usage (from the repository root):

    python bench/reference_autograd.py [--device cpu|cuda] [--threads 2] [--mnist-epoch]
        [--stages] [--overhead] [--phase-costs]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from common import add_data_root, best_time, machine_note, parser, setup, synchronize, table
from torch.nn import functional

from neuroeq import Network, TorchEngine
from neuroeq.errors import NeuroEQError
from neuroeq.rules import ClassicEP, phases
from neuroeq.rules.base import write_gradients


class ReferenceMLP(torch.nn.Module):
    """The reference's layered MLP relaxed through autograd of its primitive function."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.sizes = sizes
        self.synapses = torch.nn.ModuleList(
            torch.nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))

    def phi(self, x: torch.Tensor, y: torch.Tensor, neurons: list[torch.Tensor],
            beta: float) -> torch.Tensor:
        """``Φ = Σ_l sum((W_l s_{l-1} + b_l) * s_l) - β · ½‖s_out - onehot(y)‖²``, per sample."""
        layers = [x] + neurons
        phi = 0.0
        for i, synapse in enumerate(self.synapses):
            phi = phi + torch.sum(synapse(layers[i]) * layers[i + 1], dim=1)
        if beta != 0.0:
            target = functional.one_hot(y, num_classes=self.sizes[-1]).to(x.dtype)
            phi = phi - beta * 0.5 * ((layers[-1] - target) ** 2).sum(dim=1)
        return phi

    def relax(self, x, y, neurons, steps: int, beta: float = 0.0) -> list[torch.Tensor]:
        for _ in range(steps):
            phi = self.phi(x, y, neurons, beta)
            grads = torch.autograd.grad(phi, neurons, grad_outputs=torch.ones_like(phi))
            neurons = [torch.clamp(g, 0.0, 1.0).requires_grad_() for g in grads]
        return neurons

    def init_neurons(self, batch: int, device, dtype) -> list[torch.Tensor]:
        return [torch.zeros(batch, n, device=device, dtype=dtype, requires_grad=True)
                for n in self.sizes[1:]]

    def train_step(self, x, y, free_steps: int, nudged_steps: int, beta: float,
                   optimizer: torch.optim.Optimizer) -> None:
        neurons = self.relax(x, y, self.init_neurons(len(x), x.device, x.dtype), free_steps)
        free = [n.detach() for n in neurons]
        nudged = self.relax(x, y, [n.clone().requires_grad_() for n in free], nudged_steps, beta)
        nudged = [n.detach() for n in nudged]
        self.zero_grad()
        phi_free = self.phi(x, y, free, 0.0).mean()
        phi_nudged = self.phi(x, y, nudged, beta).mean()
        ((phi_nudged - phi_free) / (0.0 - beta)).backward()
        optimizer.step()


class ClosedFormSketch:
    """The same EP training step hand-written in closed form for this one neuron: no model
    file, no convergence checks, no error reporting; the floor a general engine can approach.

    ``s_l ← clip(b_l + W_l s_{l-1} + W_{l+1}ᵀ s_{l+1}, 0, 1)`` for all layers at once (the
    reference's and neuroeq's update at ``dt = τ``), ``W_1 x`` once per batch, the nudge
    ``β (onehot(y) - s_out)`` on the output, and ``ΔW_l ∝ ⟨s_l^β s_{l-1}^βᵀ - s_l s_{l-1}ᵀ⟩``.
    """

    def __init__(self, reference: ReferenceMLP):
        self.weights = [s.weight.detach().clone() for s in reference.synapses]
        self.biases = [s.bias.detach().clone() for s in reference.synapses]

    def relax(self, drive, neurons, steps, beta=0.0, target=None):
        weights, biases = self.weights, self.biases
        for _ in range(steps):
            new = []
            for l in range(len(neurons)):
                current = drive if l == 0 else torch.addmm(biases[l], neurons[l - 1],
                                                           weights[l].t())
                if l + 1 < len(neurons):
                    current = torch.addmm(current, neurons[l + 1], weights[l + 1])
                elif beta != 0.0:
                    current = current + beta * (target - neurons[l])
                new.append(current.clamp_(0.0, 1.0))
            neurons = new
        return neurons

    def free_phase(self, x, steps):
        """``W₁x + b₁`` once, then ``steps`` updates from zero: ``(drive, states)``."""
        drive = torch.addmm(self.biases[0], x, self.weights[0].t())
        start = [torch.zeros(len(x), w.shape[0], dtype=x.dtype, device=x.device)
                 for w in self.weights]
        return drive, self.relax(drive, start, steps)

    def update(self, x, free, nudged, beta, lr):
        """The contrastive update written straight into the weights."""
        scale = lr / (beta * len(x))
        layers_free, layers_nudged = [x] + free, [x] + nudged
        for l, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            post_delta = layers_nudged[l + 1] - layers_free[l + 1]
            if l == 0:
                w.addmm_(post_delta.t(), x, alpha=scale)
            else:
                w.addmm_(torch.cat([layers_nudged[l + 1], layers_free[l + 1]]).t(),
                         torch.cat([layers_nudged[l], -layers_free[l]]), alpha=scale)
            b.add_(post_delta.sum(0), alpha=scale)

    def train_step(self, x, y, free_steps, nudged_steps, beta, lr):
        drive, free = self.free_phase(x, free_steps)
        target = functional.one_hot(y, num_classes=self.weights[-1].shape[0]).to(x.dtype)
        nudged = self.relax(drive, free, nudged_steps, beta, target)
        self.update(x, free, nudged, beta, lr)


def matmul_flops(sizes: list[int], batch: int, free_steps: int, nudged_steps: int
                 ) -> tuple[int, int]:
    """Matmul FLOPs of one EP training step, ``(reference, neuroeq)``, from the shapes.

    With ``F_l = 2·B·n_{l-1}·n_l``: a reference step computes every ``W_l s_{l-1}`` (``Σ F``)
    and back-propagates into every free layer below the top (``Σ_{l≥2} F_l``); its update
    runs ``Φ`` forward on both phases and back into the weights (``4 Σ F``). neuroeq's step
    sends every recurrent edge both ways (``2 Σ_{l≥2} F_l``), ``W_1 x`` once per batch and
    the Hebbian update once per edge (``F_1`` for the input edge, the phases stacked for the
    others: ``2 F_l``). The ratio is the speed-up if every matmul ran at one rate and
    nothing else took time; not a bound, since the reference's autograd graph and
    elementwise work are not counted.
    """
    flops = [2 * batch * n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    steps = free_steps + nudged_steps
    recurrent = sum(flops[1:])
    reference = steps * (sum(flops) + recurrent) + 4 * sum(flops)
    neuroeq = steps * 2 * recurrent + 2 * flops[0] + 2 * recurrent
    return reference, neuroeq


def matmul_rates(sizes: list[int], batch: int, device, repeats: int,
                 dtype=torch.float32) -> dict[str, float]:
    """GFLOP/s of the matmul shapes the two methods run, measured here: the reference's
    ``x W₁ᵀ`` (every step) and, for neuroeq's steps, ``ρ(s_out) W_L`` (inner size ``n_L``)
    and ``s_{L-1} W_Lᵀ`` (``n_L`` outputs), the latter both as BLAS runs it into the
    output and as neuroeq computes it, ``(W_L s_{L-1}ᵀ)ᵀ``; all into kept buffers."""
    generator = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device=device, dtype=dtype)

    x, w1 = rand(batch, sizes[0]), rand(sizes[1], sizes[0])
    top, below, w_top = rand(batch, sizes[-1]), rand(batch, sizes[-2]), rand(sizes[-1],
                                                                              sizes[-2])
    wide, narrow = rand(batch, sizes[-2]), rand(batch, sizes[-1])
    narrow_t = rand(sizes[-1], batch)
    shapes = {
        f"x W₁ᵀ ({batch}×{sizes[0]}×{sizes[1]})":
            (lambda: torch.mm(x, w1.t()), 2 * batch * sizes[0] * sizes[1], 20),
        f"ρ(s_out) W_L ({batch}×{sizes[-1]}×{sizes[-2]})":
            (lambda: wide.addmm_(top, w_top), 2 * batch * sizes[-1] * sizes[-2], 400),
        f"s W_Lᵀ ({batch}×{sizes[-2]}×{sizes[-1]})":
            (lambda: narrow.addmm_(below, w_top.t()), 2 * batch * sizes[-1] * sizes[-2], 400),
        f"(W_L sᵀ)ᵀ ({sizes[-1]}×{sizes[-2]}×{batch}, neuroeq's form)":
            (lambda: torch.mm(w_top, below.t(), out=narrow_t), 2 * batch * sizes[-1] * sizes[-2],
             400),
    }
    rates = {}
    for label, (run, flops, calls) in shapes.items():
        seconds = best_time(lambda r=run, n=calls: [r() for _ in range(n)], device, repeats)
        rates[label] = flops * calls / seconds / 1e9
    return rates


def make_pair(sizes: list[int], device, dtype=torch.float32):
    network = Network("hopfield", sizes, dtype=dtype, device=device, seed=0)
    reference = ReferenceMLP(sizes).to(device=device, dtype=dtype)
    with torch.no_grad():
        for i, synapse in enumerate(reference.synapses, start=1):
            synapse.weight.copy_(network.weights[f"W{i}"])
            synapse.bias.copy_(network.biases[f"b{i}"])
    return network, reference


def agreement(sizes, device, free_steps: int) -> float:
    """Max |state difference| after the free phase (same weights, dt = τ)."""
    network, reference = make_pair(sizes, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, sizes[0], generator=generator).to(device)
    y = torch.randint(0, sizes[-1], (16,), generator=generator).to(device)
    ref_states = reference.relax(x, y, reference.init_neurons(16, device, x.dtype), free_steps)
    ref_state = torch.cat([n.detach() for n in ref_states], dim=-1)
    with torch.no_grad():
        engine = TorchEngine(dt=network.tau, tol=0.0, max_steps=free_steps)
        init = torch.zeros(16, network.state_size, device=device)
        ours = engine.relax(network, x, init=init).state
    return float((ours - ref_state).abs().max())


def compare(sizes, free_steps, nudged_steps, batch, device, repeats, beta=0.5, lr=0.01):
    network, reference = make_pair(sizes, device)
    generator = torch.Generator().manual_seed(1)
    batches = 3
    xs = torch.rand(batches, batch, sizes[0], generator=generator).to(device)
    ys = torch.randint(0, sizes[-1], (batches, batch), generator=generator).to(device)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=lr)
    rule = ClassicEP(beta=beta, engine=TorchEngine(dt=network.tau, tol=0.0,
                                                   max_steps=free_steps),
                     nudged_steps=nudged_steps)
    opt = torch.optim.SGD(network.parameters(), lr=lr)

    def run_reference():
        for x, y in zip(xs, ys, strict=True):
            reference.train_step(x, y, free_steps, nudged_steps, beta, ref_opt)

    def run_neuroeq():
        for x, y in zip(xs, ys, strict=True):
            rule.estimate(network, (x, y))
            opt.step()
            opt.zero_grad(set_to_none=True)

    sketch = ClosedFormSketch(reference)

    def run_sketch():
        for x, y in zip(xs, ys, strict=True):
            sketch.train_step(x, y, free_steps, nudged_steps, beta, lr)

    # interleaved rounds (one call of each per round, the best kept): a slow spell of the
    # machine then falls on all three instead of on whichever ran during it; each round's
    # own ratio (reference time / neuroeq time in that round) shows how far the noise goes
    best = [float("inf")] * 3
    ratios = []
    for _ in range(repeats):
        times = [best_time(run, device, 1)
                 for run in (run_reference, run_neuroeq, run_sketch)]
        best = [min(b, t) for b, t in zip(best, times, strict=True)]
        ratios.append(times[0] / times[1])
    t_ref, t_ours, t_sketch = best
    return (batches * batch / t_ref, batches * batch / t_ours, batches * batch / t_sketch,
            ratios)


def stage_times(sizes, free_steps: int, nudged_steps: int, batch: int, device, rounds: int,
                beta: float = 0.5, lr: float = 0.01) -> list[list]:
    """Median milliseconds per stage of one training step, neuroeq's stages (as
    ``ClassicEP.estimate`` runs them, then ``optimizer.step()``) and the hand-written
    step's, one step of each per round."""
    network, reference = make_pair(sizes, device)
    sketch = ClosedFormSketch(reference)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, sizes[0], generator=generator).to(device)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator).to(device)
    engine = TorchEngine(dt=network.tau, tol=0.0, max_steps=free_steps)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)
    ours: dict[str, list[float]] = {}
    floor: dict[str, list[float]] = {}

    def timed(log: dict, name: str, run):
        start = time.perf_counter()
        value = run()
        synchronize(device)
        log.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
        return value

    def neuroeq_step():  # the stages of ClassicEP.estimate, each timed
        inputs, targets = timed(ours, "input and targets", lambda: (
            network.clamped_input(x), network.targets(y)))
        with torch.no_grad():
            free = timed(ours, "free phase", lambda: engine.relax(network, inputs))
        nudged = timed(ours, "nudged phase", lambda: phases.nudged_phase(
            engine, network, inputs, targets, beta, free, max_steps=nudged_steps))
        grads = timed(ours, "Hebbian update", lambda: phases.hebbian_difference(
            network, nudged.state, free.state, inputs, 1.0 / beta))
        grads = timed(ours, "readout gradient and cost", lambda: (phases.combine(
            grads, phases.readout_gradients(network, free.state, targets)),
            phases.mean_cost(network, free.state, targets))[0])
        timed(ours, "param.grad", lambda: write_gradients(network, grads))
        timed(ours, "optimizer step and zero_grad",
              lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))

    def sketch_step():
        drive, free = timed(floor, "free phase", lambda: sketch.free_phase(x, free_steps))
        # the one-hot targets belong to the nudged phase, as in neuroeq's
        nudged = timed(floor, "nudged phase", lambda: sketch.relax(
            drive, free, nudged_steps, beta,
            functional.one_hot(y, num_classes=sizes[-1]).to(x.dtype)))
        timed(floor, "Hebbian update", lambda: sketch.update(x, free, nudged, beta, lr))

    for _ in range(10):  # warm-up
        neuroeq_step()
        sketch_step()
    ours.clear()
    floor.clear()
    for _ in range(rounds):
        neuroeq_step()
        sketch_step()
    rows = []
    for name, values in ours.items():
        other = floor.get(name)
        rows.append([name, f"{statistics.median(values):.3f}",
                     "-" if other is None else f"{statistics.median(other):.3f}"])
    totals = [sum(statistics.median(v) for v in log.values()) for log in (ours, floor)]
    rows.append(["total", f"{totals[0]:.3f}", f"{totals[1]:.3f}"])
    return rows


OVERHEAD_SIZES = [784, 40, 2]


def overhead_rows(device, repeats: int, batch: int = 4) -> list[list]:
    """µs per training step of the three methods on a network so small (784-40-2, batch 4)
    that every kernel takes about a microsecond: at 1 free / 1 nudged step the time is each
    method's fixed cost per training step (Python, dispatch, checks, set-up), and the
    difference to 20 / 4 steps, over the 22 extra steps, its cost per Euler step."""
    times = {}
    for free_steps, nudged_steps in ((1, 1), (20, 4)):
        rates = compare(OVERHEAD_SIZES, free_steps, nudged_steps, batch, device, repeats)[:3]
        times[free_steps] = [batch / rate * 1e6 for rate in rates]
    return [[name, f"{times[1][i]:.0f}", f"{(times[20][i] - times[1][i]) / 22:.1f}"]
            for i, name in enumerate(("reference", "neuroeq", "hand-written"))]


PHASE_STEPS = (1, 4, 8, 16)


def phase_cost_rows(device, rounds: int, sizes=(784, 500, 10), batch: int = 128,
                    beta: float = 0.5) -> list[list]:
    """Per phase and method: the median µs of relaxations of :data:`PHASE_STEPS` steps and
    the least-squares line through them, ``time = fixed + steps × per step`` (interleaved
    rounds, one relaxation of each kind per round)."""
    network, reference = make_pair(list(sizes), device)
    sketch = ClosedFormSketch(reference)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, sizes[0], generator=generator).to(device)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator).to(device)
    engine = TorchEngine(dt=network.tau, tol=0.0, max_steps=20)
    with torch.no_grad():
        inputs, targets = network.clamped_input(x), network.targets(y)
        free = engine.relax(network, inputs)  # the nudged phases start from these
        drive, sketch_free = sketch.free_phase(x, 20)
        onehot = functional.one_hot(y, num_classes=sizes[-1]).to(x.dtype)
    runs = {}
    for k in PHASE_STEPS:
        runs["free phase", "neuroeq", k] = lambda k=k: engine.relax(network, inputs,
                                                                    max_steps=k)
        runs["free phase", "hand-written", k] = lambda k=k: sketch.free_phase(x, k)
        runs["nudged phase", "neuroeq", k] = lambda k=k: engine.relax(
            network, inputs, y=targets, beta=beta, start=free, max_steps=k)
        runs["nudged phase", "hand-written", k] = lambda k=k: sketch.relax(
            drive, sketch_free, k, beta, onehot)
    times: dict[tuple, list[float]] = {key: [] for key in runs}
    with torch.no_grad():
        for round_index in range(rounds + 5):  # the first five rounds warm up
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                synchronize(device)
                if round_index >= 5:
                    times[key].append((time.perf_counter() - start) * 1e6)
    rows = []
    for phase in ("free phase", "nudged phase"):
        for method in ("neuroeq", "hand-written"):
            medians = [statistics.median(times[phase, method, k]) for k in PHASE_STEPS]
            slope, intercept = statistics.linear_regression(PHASE_STEPS, medians)
            rows.append([phase, method, *(f"{m:.0f}" for m in medians), f"{intercept:.0f}",
                         f"{slope:.1f}"])
    return rows


def mnist_epoch(device, data_root: str | None, threads: int) -> tuple[float, float, str]:
    from neuroeq.data import load_dataset
    from neuroeq.training import TrainConfig, train

    try:
        data = load_dataset("mnist", "train", root=data_root)
        source = "MNIST training set (60,000 samples)"
    except NeuroEQError as exc:  # no data here: same shapes, random values
        from neuroeq.data import LabeledData
        generator = torch.Generator().manual_seed(0)
        data = LabeledData(torch.rand(60_000, 784, generator=generator),
                           torch.randint(0, 10, (60_000,), generator=generator), 10, "random")
        source = f"random data of MNIST's shape (MNIST not readable: {exc})"
    network = Network("hopfield", (784, 500, 10), dtype=torch.float32, device=device, seed=0)
    rule = ClassicEP(beta=0.5, engine=TorchEngine(tol=0.0, max_steps=20), nudged_steps=4)
    config = TrainConfig(epochs=1, batch_size=128, lr=0.1, seed=0)
    start = time.perf_counter()
    metrics = train(network, rule, data, None, config, progress=False)
    wall = time.perf_counter() - start
    return float(metrics["epoch_seconds"].values[0]), float(
        metrics["train_accuracy"].values[0]), f"{source}; wall incl. set-up {wall:.1f} s"


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mnist-epoch", action="store_true", help="also time one MNIST epoch")
    add_data_root(p)
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--stages", action="store_true",
                   help="also time the stages of one 784-500-10 training step at 20 / 4")
    p.add_argument("--overhead", action="store_true",
                   help="also time the fixed cost per training step and per Euler step on "
                        "a tiny network (784-40-2, batch 4)")
    p.add_argument("--phase-costs", action="store_true",
                   help="also split each phase of the 784-500-10 step into a fixed cost and "
                        "a cost per Euler step (relaxations of 1, 4, 8 and 16 steps)")
    args = p.parse_args()
    device = setup(args)
    if not args.skip_compare:
        rows, spread = [], []
        for sizes in ([784, 500, 10], [784, 512, 512, 10]):
            check = agreement(sizes, device, 20)
            for free_steps, nudged_steps in ((20, 4), (250, 25)):
                ref, ours, floor, ratios = compare(sizes, free_steps, nudged_steps, 128,
                                                   device, args.repeats)
                spread.append(f"{'-'.join(map(str, sizes))} {free_steps} / {nudged_steps}: "
                              f"median {statistics.median(ratios):.2f}× "
                              f"({min(ratios):.2f}-{max(ratios):.2f}×)")
                flops_ref, flops_ours = matmul_flops(sizes, 128, free_steps, nudged_steps)
                rows.append(["-".join(map(str, sizes)), f"{free_steps} / {nudged_steps}",
                             ref, ours, ours / ref, floor, floor / ref,
                             f"{flops_ref / 1e6:,.0f} / {flops_ours / 1e6:,.0f}",
                             f"{flops_ref / flops_ours:.2f}", f"{check:.1e}"])
                print(f"{rows[-1][0]} {rows[-1][1]}: reference {ref:,.0f}, neuroeq {ours:,.0f}, "
                      f"hand-written {floor:,.0f} samples/s ({ours / ref:.2f}×)",
                      file=sys.stderr, flush=True)
        print(table(["network", "free / nudged steps", "reference samples/s",
                     "neuroeq samples/s", "speed-up", "hand-written samples/s",
                     "hand-written speed-up",
                     "matmul MFLOP per training step (reference / neuroeq)",
                     "matmul FLOP ratio", "max state diff (20 steps)"], rows))
        print(f"speed-up within each of the {args.repeats} rounds (same round, same machine "
              "state): " + "; ".join(spread))
        rates = matmul_rates([784, 500, 10], 128, device, args.repeats)
        print("matmul rates (GFLOP/s, float32): " + "; ".join(
            f"{label} {rate:.1f}" for label, rate in rates.items()))
    if args.stages:
        rounds = max(50, 10 * args.repeats)
        print(f"stages of one 784-500-10 training step, 20 / 4 steps, batch 128 (median ms of "
              f"{rounds} interleaved rounds):")
        print(table(["stage", "neuroeq", "hand-written"],
                    stage_times([784, 500, 10], 20, 4, 128, device, rounds)))
    if args.overhead:
        rounds = max(50, 10 * args.repeats)
        print(f"fixed costs on {'-'.join(map(str, OVERHEAD_SIZES))}, batch 4 (best of {rounds} "
              "interleaved rounds):")
        print(table(["method", "µs per training step (1 / 1 steps)", "µs per further step"],
                    overhead_rows(device, rounds)))
    if args.phase_costs:
        rounds = max(50, 10 * args.repeats)
        print(f"fixed and per-step costs of the phases, 784-500-10, batch 128 (median µs of "
              f"{rounds} interleaved rounds; the line fitted through them):")
        print(table(["phase", "method", *(f"{k} steps" for k in PHASE_STEPS),
                     "fixed µs", "µs per step"], phase_cost_rows(device, rounds)))
    if args.mnist_epoch:
        seconds, accuracy, note = mnist_epoch(device, args.data_root, args.threads)
        print(f"MNIST epoch, 784-500-10, 20/4 steps, batch 128, float32: {seconds:.1f} s "
              f"(train accuracy {accuracy:.3f}); {note}")
    print(machine_note(device, args.threads))


if __name__ == "__main__":
    main()
