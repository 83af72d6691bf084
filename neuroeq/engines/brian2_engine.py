"""Brian2 engine: the model file's equations simulated by Brian2, relaxed to rest.

A batch of ``B`` samples is ``B`` block-diagonal copies of each free layer in one
``NeuronGroup`` per layer; each recurrent projection is one ``Synapses`` object whose
summed variable carries ``I_post = Σ_pre w_syn ρ_pre`` (a symmetric weight carries its
transpose in the same object, ``I_pre = Σ_post w_syn ρ_post``); its synapses interleave
groups of ``INTERLEAVE`` copies, so that neither scatter-add adds twice in a row to one
neuron. The clamped input layer is not simulated: its current ``Σ W x`` is computed in
torch and enters as a constant ``I_in``. Each layer integrates, with Euler steps of ``dt``,

``ds/dt = F_model(s; I_syn = I_in + Σ I_e, bias) + nudge + corr``

where ``ρ`` (and ``ρ'`` where the equations use it) is a state variable recomputed from the
new state at the end of each Euler update, in the state updater's own loop (after the
projection onto the bounds, for bounded models), and set from the initial state by
``write_state``; ``nudge = -(β/τ) ∂C/∂s`` on the output layer's coupled variable comes from
the torch readout (``network.cost_gradient``), evaluated at the simulated output state by a
Brian2 ``NetworkOperation`` at the start of every ``nudge_every``-th step (every step by
default, so the nudged dynamics are the torch engine's step for step; inactive in free
phases); and ``corr`` is AsymEP's correction ``-2A(s - s*) = -(J* - J*ᵀ)(s - s*)`` built
inside the model from the free state ``s*`` stored per neuron (only when an
:class:`~neuroeq.rules.asym_ep.AsymCorrection` is passed as ``force``). Weights, biases and
currents are written into the existing objects between phases: a network is built once
per (network, batch, variant) and reset with ``restore()``; nothing is recompiled.
Convergence is checked between chunks on the simulated state (every variable, ``v`` and
``w`` for FitzHugh-Nagumo): the residual ``max|ds/dt|·τ`` of the full (nudged, corrected)
dynamics, as in :class:`~neuroeq.engines.torch_engine.TorchEngine`, whose
:class:`RelaxResult` this engine returns; limit cycles, divergence and NaN raise
:class:`~neuroeq.errors.RelaxationError` naming the layer and the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neuroeq.checks import nudge_strength, positive_number, whole_number
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
from neuroeq.engines.failures import ConvergenceLog, check_finite, not_settled
from neuroeq.engines.settings import RelaxationSettings, start_state
from neuroeq.engines.torch_engine import RelaxResult
from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.linearization import elementwise_partials
from neuroeq.network import Edge, Network, Params

if TYPE_CHECKING:
    import brian2
    from brian2.core.variables import Variable

    from neuroeq.neuron_model import NeuronModel
    from neuroeq.rules.asym_ep import AsymCorrection

# Synapses go in groups of 8 interleaved copies (``block_diagonal``): the summed variables'
# scatter-adds then never add twice in a row to one neuron. FHN 784-256-10 at batch 256:
# 2.8 ns -> 0.6 ns per synapse for the forward sum; groups of 4 and 16 were as fast, 32 and
# the whole batch slower (strided accesses spread over too many cache lines and pages).
INTERLEAVE = 8
#: about where the residual of float32 states read back from Brian2 stops falling
FLOAT32_FLOOR = 1e-6


@dataclass
class _Projection:
    """One ``Synapses`` object: a primary edge and, for symmetric weights, its transpose."""

    edge: Edge
    index: int
    partner: int | None
    synapses: object
    keep: np.ndarray
    weight_index: np.ndarray


class _Simulation:
    """The Brian2 objects of one network at one batch size (plain or with AsymEP's
    correction); built once, reused for every phase."""

    def __init__(self, network: Network, batch: int, dt: float, asym: bool):
        import brian2

        self.build_objects(network, batch, dt, asym)
        self.nudge_force: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.nudge_every = 1
        self._steps_since_nudge = 0
        self.refresh_nudge = brian2.NetworkOperation(self._refresh_nudge, clock=self.clock,
                                                     when="start", name="neuroeq_nudge")
        self.refresh_nudge.active = False  # only nudged phases call back into Python
        self.net = brian2.Network(*self.objects(), self.refresh_nudge)
        self.net.store("built")

    def objects(self) -> list:
        """The groups and synapses (what a ``brian2.Network`` of this simulation holds)."""
        return [*self.groups.values(), *(p.synapses for p in self.projections)]

    def build_objects(self, network: Network, batch: int, dt: float, asym: bool) -> None:
        """The ``NeuronGroup`` per layer and ``Synapses`` per projection, on whichever Brian2
        device is active (the runtime one here; ``bench/bench_brian2.py`` also builds them
        for ``cpp_standalone``), once the model's parameters are checked
        (:func:`check_parameter_names`); every name they define is one that ``ENGINE_NAMES``
        lists (:func:`check_engine_names`)."""
        import brian2

        model = network.model
        check_dimensionless(model)
        check_parameter_names(model, Brian2Engine.name)
        self.network, self.batch, self.dt, self.asym = network, batch, dt, asym
        compiled = network.compiled
        self.variables = compiled.variables
        self.coupled = compiled.coupled
        namespace = model_namespace(model)
        # a fixed name: the generated code names the clock's arrays, and Brian2 would number
        # an unnamed clock (clock_1, clock_2, ...) while earlier simulations are alive, so each
        # new simulation would compile its state updaters again
        self.clock = brian2.Clock(dt=dt * brian2.second, name="neuroeq_clock")
        edges = [(k, e) for k, e in enumerate(network.edges) if e.pre > 0 and e.post > 0]
        incoming = {l: [] for l in range(1, network.n_layers + 1)}   # I_e{k} on post
        outgoing = {l: [] for l in range(1, network.n_layers + 1)}   # T_e{k} on pre
        for k, edge in edges:
            incoming[edge.post].append(k)
            outgoing[edge.pre].append(k)
        self.groups: dict[int, object] = {}
        for l in range(1, network.n_layers + 1):
            self.groups[l] = self._layer(model, l, incoming[l], outgoing[l], namespace)
        self.projections: list[_Projection] = []
        partners = {(e.param, e.pre, e.post): k for k, e in edges if not e.primary}
        for k, edge in edges:
            if not edge.primary:
                continue
            partner = partners.get((edge.param, edge.post, edge.pre))
            lateral = edge.kind == "lateral"
            pre_group, post_group = self.groups[edge.pre], self.groups[edge.post]
            lines = ["w_syn : 1", f"I_e{k}_post = w_syn*rho_pre : 1 (summed)"]
            if asym:
                lines += [f"D_e{k}_post = w_syn*dcp_pre : 1 (summed)",
                          f"T_e{k}_pre = w_syn*gd_post : 1/second (summed)"]
            if partner is not None:
                lines.append(f"I_e{partner}_pre = w_syn*rho_post : 1 (summed)")
                if asym:
                    lines += [f"D_e{partner}_pre = w_syn*dcp_post : 1 (summed)",
                              f"T_e{partner}_post = w_syn*gd_pre : 1/second (summed)"]
            synapses = brian2.Synapses(pre_group, post_group, "\n".join(lines), clock=self.clock,
                                       namespace=namespace, name=f"neuroeq_e{k}")
            pre, post, keep, weight_index = block_diagonal(
                batch, network.sizes[edge.pre], network.sizes[edge.post],
                exclude_diagonal=lateral, interleave=INTERLEAVE)
            synapses.connect(i=pre, j=post)
            self.projections.append(_Projection(edge, k, partner, synapses, keep, weight_index))
        check_engine_names(self.objects(), model, Brian2Engine.name)

    def _layer(self, model: NeuronModel, layer: int, incoming: list[int], outgoing: list[int],
               namespace: dict) -> brian2.NeuronGroup:
        """The ``NeuronGroup`` of one layer. Its derived variables (``ρ``, and ``ρ'`` and
        AsymEP's ``dcp``, ``gd`` where used) are recomputed from the new state at the end of
        each Euler update, in the state updater's own loop (for bounded models after the
        clip, in the clip's code at ``'end'``); ``write_state`` sets their initial values."""
        import brian2

        compiled = self.network.compiled
        code = self._equations(model, layer, incoming, outgoing)
        refresh = "\n".join(self._refresh_code(model))
        name = f"neuroeq_layer{layer}"
        method = "euler" if compiled.bounds else _EulerThen(refresh)
        group = brian2.NeuronGroup(self.batch * self.network.sizes[layer], code, method=method,
                                   clock=self.clock, namespace=namespace, name=name)
        if compiled.bounds:
            clip = [f"{v} = clip({v}, {low!r}, {high!r})"
                    for v, (low, high) in compiled.bounds.items()]
            group.run_regularly("\n".join([*clip, refresh]), when="end", name=f"{name}_project")
        return group

    def _uses_rho_prime(self, model: NeuronModel) -> bool:
        """Whether the state equations read ``ρ'`` (then it is a refreshed variable too)."""
        return "rho_prime" in " ".join(eq.code for eq in model.state)

    def _refresh_code(self, model: NeuronModel) -> list[str]:
        """Statements that recompute the derived variables from the state."""
        lines = [f"rho = {model.rho_code}"]
        if self._uses_rho_prime(model):
            lines.append(f"rho_prime = {model.rho_prime_code}")
        if self.asym:
            lines.append(f"dcp = rp_star*({self.coupled} - {self.coupled}_star)")
            lines.append("gd = " + " + ".join(f"g_{v}*({v} - {v}_star)" for v in self.variables))
        return lines

    def _equations(self, model: NeuronModel, layer: int, incoming: list[int],
                   outgoing: list[int]) -> str:
        asym = self.asym
        lines = []
        for eq in model.state:
            extra = []
            if layer == self.network.n_layers and eq.variable == self.coupled:
                extra.append("nudge")
            if asym:
                extra.append(f"corr_{eq.variable}")
            rhs = f"({eq.code})" + "".join(f" + {term}" for term in extra)
            lines.append(f"d{eq.variable}/dt = {rhs} : 1")
        lines.append("rho : 1")
        if self._uses_rho_prime(model):
            lines.append("rho_prime : 1")
        lines.append("I_syn = " + " + ".join(["I_in"] + [f"I_e{k}" for k in incoming]) + " : 1")
        lines += ["I_in : 1 (constant)", "bias : 1 (constant)"]
        lines += [f"I_e{k} : 1" for k in incoming]
        if layer == self.network.n_layers:
            lines.append("nudge : 1/second (constant)")
        if asym:
            lines += self._correction_equations(incoming, outgoing)
        return "\n".join(lines)

    def _correction_equations(self, incoming: list[int], outgoing: list[int]) -> list[str]:
        """``corr_k = -g_k Σ_j M_ij ρ'(s_j*)Δc_j + [k = c] ρ'(s_i*) Σ_j M_ji gd_j - (L - Lᵀ)Δ``:
        the synaptic and the within-neuron parts of ``-(J* - J*ᵀ)(s - s*)``."""
        variables, coupled = self.variables, self.coupled
        lines = ["rp_star : 1 (constant)", "dcp : 1", "gd : 1/second"]
        lines += [f"D_e{k} : 1" for k in incoming] + [f"T_e{k} : 1/second" for k in outgoing]
        for v in variables:
            lines += [f"{v}_star : 1 (constant)", f"g_{v} : 1/second (constant)"]
        for a, first in enumerate(variables):
            for second in variables[a + 1:]:
                lines.append(f"a_{first}_{second} : 1/second (constant)")
        d_total = " + ".join(f"D_e{k}" for k in incoming) or "0"
        t_total = " + ".join(f"T_e{k}" for k in outgoing) or "0/second"
        for a, v in enumerate(variables):
            terms = [f"-g_{v}*({d_total})"]
            if v == coupled:
                terms.append(f"+ rp_star*({t_total})")
            for m in variables[a + 1:]:
                terms.append(f"- a_{v}_{m}*({m} - {m}_star)")
            for m in variables[:a]:
                terms.append(f"+ a_{m}_{v}*({m} - {m}_star)")
            lines.append(f"corr_{v} = " + " ".join(terms) + " : 1/second")
        return lines

    # ------------------------------------------------------------- data in and out
    def write_parameters(self, params: Params, drive: dict[int, torch.Tensor]) -> None:
        network = self.network
        for projection in self.projections:
            matrix = network.matrix(projection.edge, params).detach()
            values = matrix.reshape(-1).cpu().numpy().astype(np.float64)[projection.keep]
            projection.synapses.w_syn_[:] = values[projection.weight_index]
        for l, group in self.groups.items():
            bias = params[f"b{l}"].detach().cpu().numpy().astype(np.float64)
            group.bias_[:] = np.tile(bias, self.batch)
            current = drive.get(l)
            group.I_in_[:] = 0.0 if current is None else _flat(current, self.batch, group.N)

    def write_state(self, state: torch.Tensor) -> None:
        for block in self.network.blocks:
            group = self.groups[block.layer]
            values = state[..., block.start:block.stop]
            getattr(group, block.variable + "_")[:] = _flat(values, self.batch, group.N)
        self._refresh_derived()

    def rates(self, coupled: np.ndarray) -> dict[str, np.ndarray]:
        """``ρ`` (and ``ρ'`` where the equations use it) of a coupled variable's values, as
        the state updater leaves them after each step (evaluated in torch)."""
        compiled = self.network.compiled
        c = torch.from_numpy(np.array(coupled, dtype=np.float64))
        out = {"rho": compiled.rho(c).numpy()}
        if self._uses_rho_prime(self.network.model):
            out["rho_prime"] = compiled.rho_prime(c).numpy()
        return out

    def _refresh_derived(self) -> None:
        """Set ``ρ`` (and ``ρ'``, AsymEP's ``dcp`` and ``gd`` where used) from the written
        state, as the state updater does at the end of every step."""
        for group in self.groups.values():
            value = {name: np.asarray(getattr(group, name + "_")[:]) for name in self.variables}
            for name, rate in self.rates(value[self.coupled]).items():
                getattr(group, name + "_")[:] = rate
            if self.asym:
                def delta(name: str, group: brian2.NeuronGroup = group,
                          value: dict[str, np.ndarray] = value) -> np.ndarray:
                    return value[name] - np.asarray(getattr(group, f"{name}_star_")[:])

                group.dcp_[:] = np.asarray(group.rp_star_[:]) * delta(self.coupled)
                group.gd_[:] = sum(np.asarray(getattr(group, f"g_{name}_")[:]) * delta(name)
                                   for name in self.variables)

    def read_state(self) -> torch.Tensor:
        network = self.network
        state = torch.empty(self.batch, network.state_size, dtype=torch.float64)
        for block in network.blocks:
            values = np.asarray(getattr(self.groups[block.layer], block.variable + "_")[:])
            state[:, block.start:block.stop] = torch.from_numpy(
                values.reshape(self.batch, block.stop - block.start).copy())
        return state.to(dtype=network.dtype, device=network.device)

    def set_nudge(self, force: Callable[[torch.Tensor], torch.Tensor] | None,
                  every: int = 1) -> None:
        """Nudge the output layer by ``force(c_out)`` (B, n_out) -> (B, n_out), evaluated
        on its simulated coupled variable ``c_out`` at the start of every ``every``-th step
        (``None``: no nudge)."""
        self.nudge_force, self.nudge_every, self._steps_since_nudge = force, int(every), 0
        self.refresh_nudge.active = force is not None
        if force is None:
            self.groups[self.network.n_layers].nudge_[:] = 0.0

    def _refresh_nudge(self) -> None:
        if self.nudge_force is None:
            return
        if self._steps_since_nudge % self.nudge_every == 0:
            variables = self.groups[self.network.n_layers].variables  # the arrays themselves
            coupled = variables[self.coupled].get_value().reshape(self.batch, -1)
            nudge = self.nudge_force(torch.from_numpy(coupled.copy()))
            variables["nudge"].get_value()[:] = nudge.reshape(-1).numpy()
        self._steps_since_nudge += 1

    def write_anchor(self, coefficients: dict[int, dict[str, torch.Tensor]]) -> None:
        for l, values in coefficients.items():
            group = self.groups[l]
            for name, value in values.items():
                getattr(group, name + "_")[:] = _flat(value, self.batch, group.N)
        self._refresh_derived()

    def run(self, steps: int) -> None:
        """``steps`` Euler steps in one ``run()`` call (no new code objects after the
        first)."""
        with brian2_errors(f"model {self.network.model.name!r} in the Brian2 engine"):
            run_steps(self.net, steps, self.dt)


def _euler_change(network: Network, state: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``|Π(s + step) - s|``: the step itself where the projection leaves it, not the
    difference of the rounded sum (in float32 that difference of numbers near 1 is
    quantised to 6e-8, a residual floor of 6e-8·τ/dt above the engine's tolerance)."""
    if not network.compiled.bounds:
        return step.abs()
    free = state + step
    moved = free.clone()
    network.project(moved)
    return torch.where(moved == free, step.abs(), (moved - state).abs())


class _EulerThen:
    """Brian2's Euler integrator followed by ``refresh`` (abstract code) in the same code
    object: the derived variables are recomputed from the new state in the update's loop."""

    def __init__(self, refresh: str):
        self.refresh = refresh
        self.__name__ = "euler"

    def __call__(self, equations: brian2.Equations,
                 variables: Mapping[str, Variable] | None = None,
                 method_options: dict[str, Any] | None = None) -> str:
        from brian2.stateupdaters.explicit import euler

        return euler(equations, variables, method_options) + "\n" + self.refresh


BRIAN2 = " in Brian2"  # named in the failure messages


@dataclass
class Brian2Engine(RelaxationSettings):
    """Relaxation in Brian2. ``None`` takes the model file's ``[integration]`` values.

    Args:
        target: ``cython`` (compiled once, cached in the project's cache directory) or
            ``numpy`` (no compiler; quick for tiny networks).
        dt: Euler step in seconds.
        max_steps: step budget per phase.
        tol: stop when every sample's ``max|ds/dt|·τ < tol``; ``0`` runs the full budget.
        check_every: steps per ``run()`` call; convergence is checked between calls.
        nudge_every: steps between refreshes of the readout's nudging force inside the
            simulation (1: every step, the torch engine's dynamics exactly).
        divergence: ``|s|`` above this counts as divergence.
        on_failure: ``raise`` (default), ``warn`` or ``ignore`` when a phase does not settle
            (the result carries the error in ``failure``); NaN, inf and divergence always
            raise.
        record_trace: keep the max residual at each check.
    """

    target: str = "cython"
    dt: float | None = None
    max_steps: int | None = None
    tol: float | None = None
    check_every: int = 100
    nudge_every: int = 1
    divergence: float = 1e6
    on_failure: str = "raise"
    record_trace: bool = False
    _simulations: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    builds: int = field(default=0, init=False, compare=False)

    name = "brian2"
    differentiable = False  # simulates without autograd (no BPTT)
    samples_statistics = False  # it relaxes to rest (the spiking engine samples spikes)
    # it simulates the model's own state (with AsymEP's correction) only: it runs the rules
    # whose runs_on_brian2 is set, and every other rule refuses it (check_engine)
    brian2_rules_only = True

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"Brian2 target {self.target!r} must be one of {', '.join(TARGETS)}")
        self._check_relaxation_settings()
        self.nudge_every = whole_number(self.nudge_every, "nudge_every", 1)
        self.divergence = positive_number(self.divergence, "divergence")

    def simulation(self, network: Network, batch: int, asym: bool = False) -> _Simulation:
        """The Brian2 objects for ``network`` at this batch size (built on first use; the
        engine keeps the ones used last: :func:`recent_simulation`)."""
        dt = self.settings(network)[0]

        def build() -> _Simulation:
            configure_brian2(self.target)
            with brian2_errors(f"model {network.model.name!r} in the Brian2 engine"):
                return _Simulation(network, batch, dt, asym)

        simulation, built = recent_simulation(self._simulations, (id(network), batch, asym, dt),
                                              network, build)
        self.builds += int(built)
        return simulation

    def relax(self, network: Network, x: torch.Tensor, *, y: torch.Tensor | None = None,
              beta: float = 0.0, init: torch.Tensor | None = None,
              force: Callable[[torch.Tensor], torch.Tensor] | None = None,
              params: Params | None = None, drive: dict | None = None,
              max_steps: int | None = None, tol: float | None = None,
              start: RelaxResult | None = None) -> RelaxResult:
        """Relax ``B`` samples ``x`` (B, n_in) from ``init`` (B, N) with nudge ``β``.

        Same contract as :meth:`TorchEngine.relax` (``start``: an earlier phase's result,
        for its state and input currents); ``force`` may only be AsymEP's
        correction (it is realised inside the Brian2 model). No autograd (BPTT needs the
        torch engine).
        """
        from neuroeq.rules.asym_ep import AsymCorrection

        beta = nudge_strength(beta)
        if beta != 0.0 and y is None:
            raise ConfigError("a nudged phase (beta != 0) needs targets y")
        self.check_range(network, beta)
        init, drive = self._warm_start(start, init, drive)
        if force is not None and not isinstance(force, AsymCorrection):
            raise ConfigError("the Brian2 engine realises only AsymEP's correction inside its "
                              "model; other extra forces need TorchEngine")
        with torch.no_grad():
            return self._relax(network, x, y, beta, init, force, params, drive, max_steps, tol)

    def _relax(self, network: Network, x: torch.Tensor, y: torch.Tensor | None, beta: float,
               init: torch.Tensor | None, force: AsymCorrection | None, params: Params | None,
               drive: dict | None, max_steps: int | None, tol: float | None) -> RelaxResult:
        dt, max_steps, tol = self._budget(network, max_steps, tol)
        x = network.clamped_input(x)
        params = network.dynamics_parameters() if params is None else params
        for name, own in network.dynamics_parameters().items():
            if params[name].shape != own.shape:
                raise ConfigError(f"the Brian2 engine takes one parameter set; {name} has shape "
                                  f"{tuple(params[name].shape)}, expected {tuple(own.shape)} "
                                  "(batched parameters need TorchEngine)")
        if drive is None:
            drive = network.drive(x, params)
        batch = x.shape[-2]
        state = network.initial_state(batch) if init is None else start_state(
            init, network, batch, leading=False, engine="the Brian2 engine").detach().clone()
        simulation = self.simulation(network, batch, asym=force is not None)
        simulation.net.restore("built")
        simulation.write_parameters(params, drive)
        simulation.write_state(state)
        if force is not None:
            simulation.write_anchor(anchor_coefficients(network, force.anchor, drive, params))
        nudge = beta / network.tau

        def velocity(s: torch.Tensor) -> torch.Tensor:
            v = network.velocity(s, drive, params)
            if nudge != 0.0:
                v = v - nudge * network.cost_gradient(s, y)
            if force is not None:
                v = v + force(s)
            return v

        target = None if y is None else network.targets(y)

        def output_nudge(coupled: torch.Tensor) -> torch.Tensor:
            """``-(β/τ) ∂C/∂c_out`` at the output's simulated coupled variable."""
            coupled = coupled.to(device=network.device, dtype=network.dtype)
            c = network.output_cost_gradient(coupled, target)
            return (-nudge * c).detach().cpu().to(torch.float64)

        simulation.set_nudge(output_nudge if nudge else None, self.nudge_every)
        return self._loop(network, simulation, state, velocity, dt, max_steps, tol)

    def _loop(self, network: Network, simulation: _Simulation, state: torch.Tensor,
              velocity: Callable[[torch.Tensor], torch.Tensor], dt: float, max_steps: int,
              tol: float) -> RelaxResult:
        log = ConvergenceLog((state.shape[0],), torch.float64, keep_trace=self.record_trace)
        delta = torch.zeros_like(state)
        step = 0
        while step < max_steps:
            chunk = min(int(self.check_every), max_steps - step)
            simulation.run(chunk)
            step += chunk
            state = simulation.read_state()
            check_finite(network, state, step, self.divergence, network.layer_of_index,
                         BRIAN2)
            delta = _euler_change(network, state, dt * velocity(state))
            residual = (delta.amax(-1) * (network.tau / dt)).to(torch.float64).cpu()
            if log.record(residual, step, tol):
                break
        failure = None
        if tol > 0 and not bool(log.converged.all()):
            failure = not_settled(network, delta, log.residual, log.converged, log.history,
                                  step, tol, network.layer_of_index, BRIAN2)
            if network.dtype == torch.float32 and float(log.residual.max()) < FLOAT32_FLOOR:
                failure = RelaxationError(
                    f"{failure} (float32 network: the states Brian2 simulates in float64 are "
                    f"rounded to float32 and the residual computed there stays near 1e-7..1e-6;"
                    f" use a float64 network or tol >= {FLOAT32_FLOOR:g})", kind=failure.kind,
                    layer=failure.layer, samples=failure.samples, residual=failure.residual)
            self._report_failure(failure, stacklevel=3)
        return RelaxResult(state=state, steps=log.steps, converged=log.converged,
                           residual=log.residual, n_steps=step, failure=failure,
                           trace=log.trace)

    def integrate(self, *args: Any, **kwargs: Any) -> RelaxResult:
        """Generic extended-state integration (Dyadic EP's ``(m, d)``) has no Brian2 model."""
        raise ConfigError("the Brian2 engine simulates the model's own state only; Dyadic EP's "
                          "doubled (m, d) state needs TorchEngine")


def anchor_coefficients(network: Network, anchor: torch.Tensor, drive: dict,
                        params: Params) -> dict[int, dict[str, torch.Tensor]]:
    """Per-neuron constants of AsymEP's correction at the free state ``s*`` (B, N):
    ``<var>_star``; ``rp_star = ρ'(s_c*)``; ``g_<var> = ∂F_var/∂I_syn``; and
    ``a_<k>_<m> = L_km - L_mk`` with ``L = ∂F/∂s`` within one neuron (``I_syn`` fixed).
    With them ``J*_{(i,k),(j,c)} = g_k(i) M_ij ρ'(s_j*)`` between neurons."""
    compiled = network.compiled
    anchor = anchor.detach()
    rates = network.rates(anchor)
    currents = network.synaptic_input(rates, drive, params)
    coefficients: dict[int, dict[str, torch.Tensor]] = {}
    names = compiled.variables
    count = len(names)
    for l in range(1, network.n_layers + 1):
        variables = network.variables(anchor, l)
        coupled = variables[compiled.coupled]
        current = currents[l] if isinstance(currents[l], torch.Tensor) else \
            torch.zeros_like(coupled)
        bias = params[f"b{l}"].detach()

        def rhs(values: tuple[torch.Tensor, ...], current: torch.Tensor,
                bias: torch.Tensor = bias) -> tuple[torch.Tensor, ...]:
            named = dict(zip(names, values, strict=True))
            c = named[compiled.coupled]
            out = compiled.velocity(named, I_syn=current, bias=bias, rho=compiled.rho(c),
                                    rho_prime=compiled.rho_prime(c))
            return tuple(out[n] for n in names)

        values = tuple(variables[n] for n in names)
        # rows[a][k] = ∂f_a/∂(values + (I,))_k
        _, rows = elementwise_partials(lambda *args: rhs(args[:count], args[count]),
                                       (*values, current.expand_as(coupled)))
        out = {"rp_star": elementwise_partials(compiled.rho, (coupled,))[1][0][0]}
        for n, value in zip(names, values, strict=True):
            out[f"{n}_star"] = value
        for a, n in enumerate(names):
            out[f"g_{n}"] = rows[a][count]
        for a in range(count):
            for m in range(a + 1, count):
                out[f"a_{names[a]}_{names[m]}"] = rows[a][m] - rows[m][a]
        coefficients[l] = {k: v.detach() for k, v in out.items()}
    return coefficients


def _flat(values: torch.Tensor | float, batch: int, size: int) -> np.ndarray:
    """A (B, n) tensor (or something broadcasting to it) as the group's flat array."""
    array = values.detach().to(torch.float64).cpu().numpy() if isinstance(values, torch.Tensor) \
        else np.asarray(values, dtype=np.float64)
    return np.broadcast_to(array, (batch, size // batch)).reshape(-1)
