"""Brian2 engine for probabilistic (Bernoulli) spiking networks (Lin, Jiang, Sengupta 2025,
arXiv 2511.11320), with phase statistics accumulated inside the simulation.

A model with a ``[spiking]`` table (``models/spiking_rate.toml``) is realised as follows.
Each step of length ``dt`` every neuron draws ``spk = int(rand() < ρ(u))`` (at ``'start'``,
one uniform number per neuron and step, whatever the state: two phases run with the same
seed share their random numbers); ``spk`` triggers the spike. The membrane integrates
``du/dt = F(u; I_syn = I_in) + nudge`` with the clamped-input current ``I_in`` computed in
torch, and each presynaptic spike adds ``w_syn·dt/τ`` (the file's ``on_pre``), so that in
expectation

``u(t+dt) = u + (dt/τ)(-u + Σ_j W_ij ρ(u_j) + I_in + b) + dt·nudge``,

the Euler step of the mean-field network. The samples are ``B`` block-diagonal copies and
each is simulated ``R`` times (``replicas``, independent copies with their own spikes).
From step ``burn_in`` on (``t ≥ t_start``, inside the same ``run()``: each Brian2 ``run()``
generates its code objects again, ~30-40 ms) the engine accumulates, per neuron, ``Σ_t spk``
and ``Σ_t u``, and per synapse of every primary projection the coincidences
``Σ_t spk_post·spk_pre`` (on the presynaptic spike), and reads them at the requested window
lengths: running averages, no spike monitor. Seeds (Brian2 ``seed()``) make every phase
reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from neuroeq.checks import nudge_strength, positive_number, whole_number, within_dtype
from neuroeq.engines.brian2_common import (
    TARGETS,
    block_diagonal,
    brian2_errors,
    check_dimensionless,
    check_engine_names,
    check_parameter_names,
    configure_brian2,
    model_namespace,
    recent_simulation,
    run_steps,
)
from neuroeq.engines.settings import check_step_range, start_state
from neuroeq.engines.torch_engine import RelaxResult
from neuroeq.errors import ConfigError, ModelError
from neuroeq.network import Edge, Network, Params
from neuroeq.neuron_model import check_spiking_table
from neuroeq.seeds import check_seed


@dataclass
class SpikingPhase(RelaxResult):
    """One phase of the spiking network and its statistics.

    ``state`` (B, N): the membrane averaged over the longest window and the replicas.
    ``windows`` (S,): window lengths (steps) at which statistics were read.
    ``rates[l]`` (S, R, B, n_l): spikes per step of free layer ``l``, per replica.
    ``membranes[l]`` (S, R, B, n_l): mean membrane. ``coincidences[param]``
    (S, R, B, n_post, n_pre): ``⟨spk_post spk_pre⟩`` of each simulated primary edge.
    ``start`` (B, N) and ``seed``: what a second phase needs to share the random numbers.
    ``residual``: ``max|F(⟨u⟩)|·τ`` of the mean-field dynamics at the mean membrane.
    """

    windows: list[int] = field(default_factory=list)
    rates: dict[int, torch.Tensor] = field(default_factory=dict)
    membranes: dict[int, torch.Tensor] = field(default_factory=dict)
    coincidences: dict[str, torch.Tensor] = field(default_factory=dict)
    start: torch.Tensor | None = None
    seed: int = 0
    beta: float = 0.0


@dataclass
class _Projection:
    edge: Edge
    synapses: object
    keep: np.ndarray


class _SpikingSimulation:
    """The Brian2 objects of one spiking network at ``copies = replicas × batch``."""

    def __init__(self, network: Network, copies: int, dt: float, draw: str, on_pre: str):
        import brian2

        model = network.model
        check_dimensionless(model)
        if len(model.state) != 1:
            raise ModelError(f"model {model.name!r}: the spiking engine needs a single membrane "
                             f"variable, found {', '.join(model.state_variables)}")
        check_parameter_names(model, SpikingEngine.name)  # before any Brian2 object
        self.network, self.copies, self.dt = network, copies, dt
        membrane = model.coupled_variable
        namespace = model_namespace(model)
        # named: an unnamed clock is numbered while other simulations are alive, which
        # changes the generated code and compiles it again
        self.clock = brian2.Clock(dt=dt * brian2.second, name="neuroeq_spiking_clock")
        equation = model.state[0]
        self.groups: dict[int, object] = {}
        for l in range(1, network.n_layers + 1):
            code = "\n".join([
                f"d{membrane}/dt = ({equation.code}) + nudge : 1",
                f"rho = {model.rho_code} : 1",
                "I_syn = I_in : 1", "I_in : 1 (constant)", "bias : 1 (constant)",
                "nudge : 1/second (constant)", "spk : 1", "acc_r : 1", "acc_u : 1",
                "t_start : second (shared, constant)",
            ])
            name = f"neuroeq_spiking_layer{l}"
            group = brian2.NeuronGroup(copies * network.sizes[l], code, method="euler",
                                       threshold="spk > 0.5", reset="", clock=self.clock,
                                       namespace=namespace, name=name)
            group.run_regularly(f"spk = int({draw})", when="start", name=f"{name}_draw")
            # no temporary name: a group's variables are what check_engine_names sees
            group.run_regularly(f"acc_r += spk*int(t >= t_start)\n"
                                f"acc_u += {membrane}*int(t >= t_start)", when="end",
                                name=f"{name}_accumulate")
            self.groups[l] = group
        edges = [e for e in network.edges if e.pre > 0 and e.post > 0]
        partners = {(e.param, e.pre, e.post) for e in edges if not e.primary}
        reverse = _swap_pre_post(on_pre)
        self.projections: list[_Projection] = []
        for k, edge in enumerate(edges):
            if not edge.primary:
                continue
            pathways = {"on_pre": on_pre + "\nacc_c += spk_post*int(t >= t_start_pre)"}
            if (edge.param, edge.post, edge.pre) in partners:  # symmetric: Wᵀ carries back
                pathways["on_post"] = reverse
            synapses = brian2.Synapses(self.groups[edge.pre], self.groups[edge.post],
                                       "w_syn : 1\nacc_c : 1", clock=self.clock,
                                       namespace=namespace, name=f"neuroeq_spiking_e{k}",
                                       **pathways)
            pre, post, keep, _ = block_diagonal(copies, network.sizes[edge.pre],
                                                network.sizes[edge.post],
                                                exclude_diagonal=edge.kind == "lateral")
            synapses.connect(i=pre, j=post)
            self.projections.append(_Projection(edge, synapses, keep))
        objects = [*self.groups.values(), *(p.synapses for p in self.projections)]
        check_engine_names(objects, model, SpikingEngine.name)
        self.net = brian2.Network(*objects)
        self.net.store("built")

    def write(self, params: Params, drive: dict[int, torch.Tensor], membrane: torch.Tensor,
              nudge: torch.Tensor | None) -> None:
        """Weights, biases, input currents, initial membrane (copies, N), output nudge."""
        network, copies = self.network, self.copies
        for projection in self.projections:
            matrix = network.matrix(projection.edge, params).detach()
            values = matrix.reshape(-1).cpu().numpy().astype(np.float64)[projection.keep]
            projection.synapses.w_syn_[:] = np.tile(values, copies)
        for l, group in self.groups.items():
            group.bias_[:] = np.tile(params[f"b{l}"].detach().cpu().numpy(), copies)
            current = drive.get(l)
            group.I_in_[:] = 0.0 if current is None else _copies(current, copies)
            block = network.block(l)
            getattr(group, block.variable + "_")[:] = \
                membrane[:, block.start:block.stop].cpu().numpy().reshape(-1)
        output = self.groups[network.n_layers]
        output.nudge_[:] = 0.0 if nudge is None else _copies(nudge, copies)

    def start_statistics(self, burn_in: int) -> None:
        """Zero the accumulators; they count from step ``burn_in`` of the next ``run()``
        on (half a step early, so that rounding of ``t`` cannot drop the first step)."""
        start = (burn_in - 0.5) * self.dt
        for group in self.groups.values():
            group.acc_r_[:] = 0.0
            group.acc_u_[:] = 0.0
            group.t_start_ = start
        for projection in self.projections:
            projection.synapses.acc_c_[:] = 0.0

    def read_statistics(self, replicas: int, batch: int, window: int
                        ) -> tuple[dict, dict, dict]:
        network = self.network
        rates, membranes, coincidences = {}, {}, {}
        for l, group in self.groups.items():
            shape = (replicas, batch, network.sizes[l])
            rates[l] = torch.from_numpy(np.array(group.acc_r_[:]).reshape(shape) / window)
            membranes[l] = torch.from_numpy(np.array(group.acc_u_[:]).reshape(shape) / window)
        for projection in self.projections:
            edge = projection.edge
            n_post, n_pre = network.sizes[edge.post], network.sizes[edge.pre]
            full = np.zeros((self.copies, n_post * n_pre))
            full[:, projection.keep] = np.array(projection.synapses.acc_c_[:]).reshape(
                self.copies, -1) / window
            coincidences[edge.param] = torch.from_numpy(
                full.reshape(replicas, batch, n_post, n_pre))
        return rates, membranes, coincidences

    def run(self, steps: int) -> None:
        """``steps`` steps in one ``run()`` (no new code objects after the first)."""
        with brian2_errors(f"model {self.network.model.name!r} in the spiking engine"):
            run_steps(self.net, steps, self.dt)


@dataclass
class SpikingEngine:
    """Phases of the probabilistic spiking network in Brian2. ``None`` takes the model
    file's ``[spiking]`` values.

    Args:
        target: ``cython`` (cached compiled code) or ``numpy``.
        dt: step in seconds (one Bernoulli draw per neuron and step).
        burn_in: steps simulated before the statistics are accumulated.
        window: steps over which the statistics are averaged.
        replicas: independent copies of each sample (population size).
        snapshots: window lengths (≤ ``window``) at which the statistics are also read,
            e.g. ``(250, 500, 1000)``, for error-versus-window curves from one run.
        seed: base seed; phase ``k`` of this engine uses ``phase_seed(seed, k)`` unless
            given one.
    """

    target: str = "cython"
    dt: float | None = None
    burn_in: int | None = None
    window: int | None = None
    replicas: int = 1
    snapshots: Sequence[int] = ()
    seed: int = 0
    calls: int = field(default=0, init=False, compare=False)
    builds: int = field(default=0, init=False, compare=False)
    _simulations: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    name = "brian2_spiking"
    differentiable = False  # simulates without autograd (no BPTT)
    samples_statistics = True  # spike statistics over windows, not a relaxation to rest

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"Brian2 target {self.target!r} must be 'cython' or 'numpy'")
        self.replicas = whole_number(self.replicas, "replicas", 1)
        check_seed(self.seed, "spiking engine seed")
        if self.burn_in is not None:
            self.burn_in = whole_number(self.burn_in, "burn_in (steps)", 0)
        if self.window is not None:
            self.window = whole_number(self.window, "window (steps)", 1)
        self.snapshots = tuple(whole_number(w, "snapshots (steps)", 1) for w in self.snapshots)
        if self.dt is not None:
            self.dt = positive_number(self.dt, "dt", "seconds")

    def settings(self, network: Network) -> tuple[float, int, int, str, str]:
        """``(dt, burn_in, window, draw, on_pre)`` with the model file's defaults (and the
        check of its ``nudge`` key, :meth:`nudge_gradient`)."""
        model = network.model
        where = f"model {model.name!r}"
        if not model.spiking:
            raise ModelError(f"model {model.name!r} has no [spiking] table; the spiking engine "
                             "needs one (see models/spiking_rate.toml)")
        table = check_spiking_table(model.spiking, where)  # (also a model made in code)
        dt = self.dt if self.dt is not None else table.get("dt", 0.1 * model.tau)
        burn_in = self.burn_in if self.burn_in is not None else table.get("burn_in", 200)
        window = self.window if self.window is not None else table.get("window", 2000)
        draw, on_pre = table.get("draw", "rand() < rho"), table.get("on_pre")
        if not on_pre:
            raise ModelError(f"{where} [spiking]: 'on_pre' (what a presynaptic spike does) is "
                             "missing")
        return dt, burn_in, window, draw, on_pre

    def check_range(self, network: Network, beta: float | complex = 0.0) -> None:
        """Refuse a step ``dt`` or nudge ``β`` beyond the range of the network's dtype
        (:func:`check_step_range`; the nudging current ``β/τ`` too)."""
        check_step_range(network, self.settings(network)[0], beta)
        within_dtype(abs(beta) / network.tau, "the nudging current |beta|/tau", network.dtype,
                     f" (beta = {beta:g}, tau = {network.tau:g} s; lower beta)")

    @staticmethod
    def nudge_gradient(network: Network, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``g`` (B, n_out) of the output's nudging current ``-(β/τ) g``, at ``state``:
        ``∂C/∂r`` (``[spiking] nudge = "rate_error"``: the rate error, which also reaches
        outputs whose membrane has left the range where ``ρ' ≠ 0``) or ``ρ'(u) ∂C/∂r``
        (``"chain_rule"``, the default: ``∂C/∂u``)."""
        if network.model.spiking.get("nudge", "chain_rule") == "rate_error":
            return network.readout.cost_gradient(network.output_rates(state), y)
        return network.output_cost_gradient(network.coupled(state, network.n_layers), y)

    def windows(self, network: Network) -> list[int]:
        """The sorted window lengths at which statistics are read."""
        window = self.settings(network)[2]
        chosen = sorted({int(w) for w in self.snapshots} | {window})
        if chosen[0] < 1 or chosen[-1] > window:
            raise ConfigError(f"snapshots {list(self.snapshots)} must lie in [1, window={window}]")
        return chosen

    def simulation(self, network: Network, batch: int) -> _SpikingSimulation:
        dt, _, _, draw, on_pre = self.settings(network)
        copies = int(self.replicas) * batch

        def build() -> _SpikingSimulation:
            configure_brian2(self.target)
            with brian2_errors(f"model {network.model.name!r} in the spiking engine"):
                return _SpikingSimulation(network, copies, dt, draw, on_pre)

        simulation, built = recent_simulation(self._simulations, (id(network), copies, dt),
                                              network, build)
        self.builds += int(built)
        return simulation

    def relax(self, network: Network, x: torch.Tensor, *, y: torch.Tensor | None = None,
              beta: float = 0.0, init: torch.Tensor | None = None, seed: int | None = None,
              nudge_at: torch.Tensor | None = None, params: Params | None = None
              ) -> SpikingPhase:
        """Run one phase: ``burn_in`` steps, then statistics over the windows.

        ``x`` (B, n_in) is clamped. With ``β ≠ 0`` the output membranes get the constant
        nudge ``-(β/τ) g`` (:meth:`nudge_gradient`, torch readout) at ``nudge_at`` (B, N), normally
        the free phase's mean membrane. ``init`` (B, N) starts every replica (default: the
        model's initial state); pass a previous phase's ``start`` and ``seed`` to share its
        random numbers (common random numbers make phase differences precise).
        """
        beta = nudge_strength(beta)
        if beta != 0.0 and (y is None or nudge_at is None):
            raise ConfigError("a nudged spiking phase (beta != 0) needs targets y and the "
                              "state nudge_at at which the cost gradient is evaluated")
        self.check_range(network, beta)
        with torch.no_grad():
            return self._relax(network, x, y, beta, init, seed, nudge_at, params)

    def _relax(self, network: Network, x: torch.Tensor, y: torch.Tensor | None, beta: float,
               init: torch.Tensor | None, seed: int | None, nudge_at: torch.Tensor | None,
               params: Params | None) -> SpikingPhase:
        import brian2

        dt, burn_in, _, _, _ = self.settings(network)
        windows = self.windows(network)
        x = network.clamped_input(x)
        params = network.dynamics_parameters() if params is None else params
        drive = network.drive(x, params)
        batch, replicas = x.shape[0], int(self.replicas)
        start = network.initial_state(batch) if init is None else start_state(
            init, network, batch, leading=False, engine="the spiking engine").detach().clone()
        nudge = None
        if beta != 0.0:
            nudge = -(beta / network.tau) * self.nudge_gradient(network,
                                                                nudge_at.to(network.dtype), y)
        if seed is None:  # phase k of engine seed s: its own stream, not seed s + k's
            seed = phase_seed(self.seed, self.calls)
            self.calls += 1
        else:
            seed = check_seed(seed, "relax seed")
        simulation = self.simulation(network, batch)
        simulation.net.restore("built")
        simulation.write(params, drive, start.repeat(replicas, 1).to(torch.float64), nudge)
        rates, membranes, coincidences = {}, {}, {}
        caller_state = np.random.get_state()  # brian2.seed seeds numpy's global generator
        try:
            brian2.seed(int(seed))
            simulation.start_statistics(burn_in)
            done = -burn_in
            for window in windows:
                simulation.run(window - done)
                done = window
                r, m, c = simulation.read_statistics(replicas, batch, window)
                for store, part in ((rates, r), (membranes, m), (coincidences, c)):
                    for key, value in part.items():
                        store.setdefault(key, []).append(value)
        finally:
            np.random.set_state(caller_state)
        rates = {k: torch.stack(v) for k, v in rates.items()}
        membranes = {k: torch.stack(v) for k, v in membranes.items()}
        coincidences = {k: torch.stack(v) for k, v in coincidences.items()}
        state = torch.empty(batch, network.state_size, dtype=torch.float64)
        for l, value in membranes.items():
            block = network.block(l)
            state[:, block.start:block.stop] = value[-1].mean(0)
        state = state.to(network.dtype)
        velocity = network.velocity(state, drive, params)
        if nudge is not None:
            block = network.output_block
            velocity[:, block.start:block.stop] += nudge
        residual = velocity.abs().amax(-1) * network.tau
        return SpikingPhase(
            state=state, steps=torch.full((batch,), burn_in + windows[-1], dtype=torch.long),
            converged=torch.ones(batch, dtype=torch.bool), residual=residual,
            n_steps=burn_in + windows[-1], windows=windows, rates=rates, membranes=membranes,
            coincidences=coincidences, start=start, seed=int(seed), beta=float(beta))


def phase_seed(seed: int, phase: int) -> int:
    """The seed of an engine's ``phase``-th phase: a hash of both (``numpy.SeedSequence``),
    so that engine seed 1's first phase is not engine seed 0's second, in ``[0, 2^32)``."""
    return int(np.random.SeedSequence([int(seed), int(phase)]).generate_state(1)[0])


def _swap_pre_post(code: str) -> str:
    """The same synaptic action in the other direction (``_post`` ↔ ``_pre``)."""
    return re.sub(r"_(pre|post)\b", lambda m: "_post" if m.group(1) == "pre" else "_pre", code)


def _copies(values: torch.Tensor, copies: int) -> np.ndarray:
    """(B, n) → flat array over ``copies = R·B`` copies (replica-major)."""
    array = values.detach().to(torch.float64).cpu().numpy()
    return np.tile(array, (copies // array.shape[0], 1)).reshape(-1)
