"""Torch mean-field engine: batched relaxation of ``ds/dt = F(s)`` to a stationary state.

Euler steps ``s ← Π(s + dt·[F(s) - (β/τ) c(s) + f(s)])`` (``Π`` clamps bounded variables,
``c = ∂C/∂s`` the cost gradient, ``f`` an optional extra force such as AsymEP's
correction) until the residual ``max_i |ds_i/dt|·τ`` of every sample falls below ``tol``
or the step budget is spent. Divergence, NaN and oscillation are detected and raised as
:class:`~neuroeq.errors.RelaxationError` naming the layer and the samples.

Without autograd the step is the closed-form map of :mod:`neuroeq.engines.fast_step`
(constants folded, the clamped input's ``W x`` computed once, double-buffered in-place
updates). ``solver="anderson"`` replaces plain iteration of the Euler map ``G`` by Anderson
acceleration (type II, memory ``m``): with residuals ``f_k = G(s_k) - s_k``,
``γ = argmin ‖f_k - ΔF γ‖² (+ ridge)``, ``s_{k+1} = Π(G(s_k) - ΔG γ)`` per sample. It finds
the same fixed point ``F(s*) = 0`` in far fewer map evaluations; because it can also
converge to fixed points the dynamics leave, a converged result is checked for stability
(power iteration on the Euler map's Jacobian, exact or by finite differences; on symmetric
networks that are affine on their domain, such as Hopfield on its bounds, on a layer sweep
whose contraction is equivalent to the dynamics' stability) and an unstable one is
reported as a failure of kind ``"unstable"``.

``solver="gauss_seidel"`` sweeps the layers in order with Euler steps of ``ω·dt``
(``over_relaxation`` ``ω``), each layer reading the new states of the layers before it
(block Gauss-Seidel / SOR; for the Hopfield neuron at ``ω·dt = τ`` it is ``s_l ← clip(I_l)``
layer by layer). Its fixed points are the Euler map's; it stops when the sweep's change
``max|Δs|·τ/(ω·dt)`` is below ``tol`` and then checks the engine's own criterion with one
Euler map evaluation (sweeping on with a ten times tighter target if that fails; each
such evaluation counts in the budget), and the stability check as for Anderson. With
``tol = 0`` it sweeps the whole budget and reports the last sweep's change as the residual.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from neuroeq.checks import (
    nonnegative_number,
    nudge_strength,
    positive_number,
    whole_number,
    within_dtype,
)
from neuroeq.engines import fast_step
from neuroeq.engines.failures import (
    FLOOR_MARGIN,
    ConvergenceLog,
    check_finite,
    floor_might_bind,
    floor_notice,
    not_settled,
    residual_floor,
    sample_list,
    short,
    stability_hint,
)
from neuroeq.engines.settings import RelaxationSettings, check_step_range, start_state
from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.linearization import EulerJacobian, Linearization
from neuroeq.network import Network, Params

Force = Callable[[torch.Tensor], torch.Tensor]
Step = Callable[..., torch.Tensor]
SOLVERS = ("euler", "anderson", "gauss_seidel")
# δ of the stability check's early stop: an unstable mode passes unseen with probability
# below 0.8·δ per sample (see TorchEngine._unstable)
STABILITY_CERTIFICATE = 1e-3


@dataclass
class RelaxResult:
    """A relaxed state and how it got there.

    ``state`` (…, batch, N); ``steps`` per sample: the step at which it met the tolerance
    (-1 if it never did); ``converged`` per sample; ``residual`` per sample at the end
    (``max|ds/dt|·τ``; Euler measures it from its last step, ``max|s_k - s_{k-1}|·τ/dt``,
    the velocity at the state one step before the returned ``s_k``: no extra map
    evaluation, and where the map contracts in max-norm at least the returned state's
    own); ``n_steps`` map evaluations used (an accelerated solver's count
    includes those of its stability check, which runs to its end even past ``max_steps``);
    ``failure`` the error when not raised;
    ``trace`` the max residual at each check when recorded; ``drive`` the clamped input's
    currents ``Σ W x`` per layer that the phase used (a later phase of the same batch and
    weights reuses them instead of recomputing ``W x``); ``euler_map`` the closed-form
    map it ran, when it ran one (a later phase shares its constant parts: ``start=``);
    ``at_floor`` per sample, where some sample settled at working precision rather than
    below ``tol``: its residual reached the dtype's floor ``eps·max|s|·τ/dt`` above ``tol``
    (a warning said so; ``None`` when no sample did).
    """

    state: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    n_steps: int
    failure: RelaxationError | None = None
    trace: list[float] = field(default_factory=list)
    drive: dict[int, torch.Tensor] | None = field(default=None, repr=False)
    euler_map: fast_step.EulerMap | None = field(default=None, repr=False)
    at_floor: torch.Tensor | None = None


#: iterations in a row with a repeated residual after which Anderson counts a sample stalled
STALL_ITERATIONS = 4
#: iterations without a new best residual after which Anderson counts a sample stalled (a
#: cycle of ten points on a hard-sigmoid net; slow but sound approaches went 200 without)
STALL_PATIENCE = 1000


@dataclass
class TorchEngine(RelaxationSettings):
    """Relaxation settings. ``None`` takes the model file's ``[integration]`` values.

    Args:
        dt: Euler step in seconds.
        max_steps: step budget per phase.
        tol: stop when every sample's ``max|ds/dt|·τ < tol``; ``0`` runs the full budget.
            The residual of a step is resolved to one rounding step of the state,
            ``eps·max|s|·τ/dt`` per sample (1.19e-6 for float32 FHN near ``|v| = 1``): a
            sample whose residual is at or below it counts as settled at working precision
            even above ``tol`` (``RelaxResult.at_floor``, with a warning).
        check_every: steps between convergence checks (each check syncs the device).
        divergence: ``|s|`` above this counts as divergence.
        on_failure: ``raise`` (default), ``warn`` or ``ignore`` when a phase does not settle
            (or an accelerated solver's fixed point is unstable): the result then carries
            the error in ``failure``. NaN, inf and divergence always raise.
        record_trace: keep the max residual at each check (convergence traces).
        solver: ``euler`` (plain iteration of the Euler map, the dynamics themselves),
            ``anderson`` (Anderson-accelerated fixed-point iteration of the same map) or
            ``gauss_seidel`` (layer sweeps; where the closed-form map applies and there is
            no extra force). Both are used when no autograd is recorded, Euler otherwise.
            Steps count map evaluations (a sweep is one).
        anderson_memory: number of past residuals ``m`` Anderson mixes.
        anderson_ridge: relative ridge ``λ`` of Anderson's least squares
            (``λ·tr(ΔFᴴΔF)/m`` is added to the diagonal).
        anderson_mixing: Anderson's mixing (relaxation) parameter ``ω``: the iterate
            ``s + ω f`` is extrapolated, ``ω = 1`` extrapolates the Euler step ``G(s)``;
            ``ω = τ/dt`` makes it Anderson on the map at ``dt = τ`` (for the Hopfield neuron
            ``s ← clip(I + b)``).
        over_relaxation: ``ω`` of the Gauss-Seidel sweep (its Euler steps are ``ω·dt``).
        stability_iterations: the most power iterations of the stability check after
            Anderson or Gauss-Seidel converges (it stops early once every sample's
            perturbation has shrunk below the certificate; ``0`` disables it).
    """

    dt: float | None = None
    max_steps: int | None = None
    tol: float | None = None
    check_every: int = 10
    divergence: float = 1e6
    on_failure: str = "raise"
    record_trace: bool = False
    solver: str = "euler"
    anderson_memory: int = 10
    anderson_ridge: float = 1e-10
    anderson_mixing: float = 1.0
    over_relaxation: float = 1.0
    stability_iterations: int = 40

    name = "torch"
    differentiable = True  # BPTT runs through it
    samples_statistics = False  # it relaxes to rest (the spiking engine samples spikes)

    def __post_init__(self) -> None:
        self._check_relaxation_settings()
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver {self.solver!r} must be one of {', '.join(SOLVERS)}")
        self.anderson_memory = whole_number(self.anderson_memory, "anderson_memory", 1)
        self.anderson_ridge = nonnegative_number(self.anderson_ridge, "anderson_ridge")
        self.anderson_mixing = positive_number(self.anderson_mixing, "anderson_mixing")
        self.over_relaxation = positive_number(self.over_relaxation, "over_relaxation")
        self.stability_iterations = whole_number(self.stability_iterations,
                                                 "stability_iterations", 0)
        self.divergence = positive_number(self.divergence, "divergence")

    def check_range(self, network: Network, beta: float | complex = 0.0,
                    dt: float | None = None) -> None:
        """Refuse a step, nudge or solver factor beyond the range of the network's dtype:
        also Anderson's ``ω`` and the Gauss-Seidel sweep's steps ``over_relaxation·dt``."""
        dt = self.settings(network)[0] if dt is None else dt
        super().check_range(network, beta, dt)
        if self.solver == "anderson":
            within_dtype(self.anderson_mixing, "anderson_mixing", network.dtype)
        if self.solver == "gauss_seidel":
            check_step_range(network, self.over_relaxation * dt, beta, "over_relaxation*dt")

    def relax(self, network: Network, x: torch.Tensor, *, y: torch.Tensor | None = None,
              beta: float = 0.0, init: torch.Tensor | None = None, force: Force | None = None,
              params: Params | None = None, drive: dict | None = None,
              max_steps: int | None = None, tol: float | None = None,
              start: RelaxResult | None = None) -> RelaxResult:
        """Relax from ``init`` (default: the model's initial state) with nudge ``β``.

        ``x`` (batch, n_in) is clamped; ``y`` the targets (needed when ``β ≠ 0``). Runs
        under autograd when gradients are enabled (BPTT), without it otherwise. ``start``:
        an earlier phase of the same batch and weights (the free phase before a nudged
        one) to start from: its state (copied), its input currents and its map's constant
        parts; it replaces ``init`` and ``drive``.
        """
        beta = nudge_strength(beta)
        if beta != 0.0 and y is None:
            raise ConfigError("a nudged phase (beta != 0) needs targets y")
        dt, _, _ = self.settings(network)
        self.check_range(network, beta, dt)
        if y is not None:  # one-hot on the network's device once, not at every step
            y = network.targets(y)
        if self.solver != "euler" and torch.is_grad_enabled():
            warnings.warn(f"solver {self.solver!r} runs without autograd only: this relax "
                          "records a graph (for BPTT) and takes Euler steps; call it under "
                          "torch.no_grad() to use the solver (the rules do)", RuntimeWarning,
                          stacklevel=2)
        init, drive = self._warm_start(start, init, drive)
        x = network.clamped_input(x)
        if drive is None:
            drive = network.drive(x, params)
        if init is None:
            state = network.initial_state(x.shape[-2])
        elif (init := start_state(init, network, x.shape[-2])).is_complex():
            state = init.clone()
        else:  # a copy in the network's dtype (a float32 start for a float64 network)
            state = init.to(device=network.device, dtype=network.dtype, copy=True)
        nudge = beta / network.tau
        if not torch.is_grad_enabled() and fast_step.supports(network, state, params):
            if self.solver == "gauss_seidel" and fast_step.sweep_applies(network, force):
                result = self._gauss_seidel(network, drive, state, params, nudge, y,
                                            max_steps, tol)
                result.drive = drive
                return result
            earlier = start.euler_map if start is not None else None
            if earlier is not None and earlier.network is network and earlier.dt == dt \
                    and earlier.drive is drive and earlier.default_params and params is None:
                step = earlier.with_nudge(nudge, y, force)  # its constant parts, shared
            else:
                earlier = None
                step = fast_step.EulerMap(network, dt, drive, params, nudge=nudge, y=y,
                                          force=force)
            project = network.project if network.compiled.bounds else None
            # a start inside the bounds (the initial state, a free state) takes the map's
            # on-the-bounds forms from the first step on (~3x cheaper than the general one);
            # the model's initial state is judged from its numbers, an earlier phase's own
            # last output is known to be, any other start is checked by a reduction
            if project is not None and (
                    network.initial_within_bounds() if init is None
                    else (earlier is not None and earlier.produced(init))
                    or network.within_bounds(state)):
                step.mark_in_bounds(state)
            result = self._iterate(network, step, state, project=project, max_steps=max_steps,
                                   tol=tol, buffered=True)
            step.release_buffers()  # the result keeps the map, not the dead spare state
            result.drive, result.euler_map = drive, step
            return result

        def velocity(s: torch.Tensor) -> torch.Tensor:
            v = network.velocity(s, drive, params)
            if nudge != 0.0:
                v = v - nudge * network.cost_gradient(s, y)
            if force is not None:
                v = v + force(s)
            return v

        project = None
        if network.compiled.bounds:
            project = (lambda s: _project_differentiable(network, s)) if torch.is_grad_enabled() \
                else network.project
        result = self.integrate(network, velocity, state, project=project,
                                max_steps=max_steps, tol=tol)
        result.drive = drive
        return result

    def integrate(self, network: Network, velocity: Force, state: torch.Tensor, *,
                  project: Force | None = None, max_steps: int | None = None,
                  tol: float | None = None, describe_index: Callable[[int], str] | None = None
                  ) -> RelaxResult:
        """Relax ``ds/dt = velocity(s)`` (shape ``(..., batch, D)``) to rest.

        The generic loop behind :meth:`relax`, also used for extended states (Dyadic EP's
        ``(m, d)``) and under autograd (BPTT); ``describe_index`` names the flat index in
        error messages. The map is ``s ↦ project(s + dt·velocity(s))``.
        """
        dt, _, _ = self.settings(network)
        self.check_range(network, dt=dt)

        def step(s: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            new_state = s + dt * velocity(s)
            return project(new_state) if project is not None else new_state

        return self._iterate(network, step, state, project=project, max_steps=max_steps,
                             tol=tol, describe_index=describe_index, buffered=False)

    def _iterate(self, network: Network, step: Step, state: torch.Tensor, *,
                 project: Force | None, max_steps: int | None, tol: float | None,
                 describe_index: Callable[[int], str] | None = None, buffered: bool
                 ) -> RelaxResult:
        """Run the solver on the map ``step`` (``step(s, out)`` may write into ``out``)."""
        dt, max_steps, tol = self._budget(network, max_steps, tol)
        describe_index = describe_index or network.layer_of_index
        scale = network.tau / dt  # residual = max |ds/dt| · τ
        if self.solver == "anderson" and not torch.is_grad_enabled():
            return self._anderson(network, step, state, project, max_steps, tol, scale,
                                  describe_index)
        return self._finish(*self._euler(network, step, state, max_steps, tol, scale,
                                         describe_index, buffered), tol=tol, scale=scale)

    def _euler(self, network: Network, step: Step, state: torch.Tensor, max_steps: int,
               tol: float, scale: float, describe_index: Callable[[int], str], buffered: bool,
               offset: int = 0) -> tuple:
        """Iterate the Euler map: the dynamics themselves. Returns ``_finish``'s positional
        arguments (``at_floor`` last). ``offset``: map evaluations the relaxation used
        before (its errors count them)."""
        log = ConvergenceLog(state.shape[:-1], state.real.dtype, state.device,
                             keep_trace=self.record_trace)
        # the per-sample floors (residual_floor) are computed at a check only where they can
        # reach tol, judged from the whole state's max|s| that the finiteness check reads
        real = state.real.dtype
        floored = False  # whether some check compared residuals with their floors
        peak = 0.0  # max|s| at the last check
        last_delta: torch.Tensor | None = None  # set at every residual step (the last one too)
        spare = torch.empty_like(state) if buffered else None
        step_index = 0
        # with tol = 0 (a fixed budget) an intermediate check only looks for divergence: the
        # residual is needed at the last step alone, unless a trace is recorded
        residual_every_check = tol > 0 or self.record_trace
        for step_index in range(1, max_steps + 1):
            new_state = step(state, spare)
            check = step_index % self.check_every == 0 or step_index == max_steps
            residual_here = check and (residual_every_check or step_index == max_steps)
            if residual_here:  # buffered: the old state is dead (the next step overwrites it)
                last_delta = (torch.sub(new_state, state, out=state) if buffered
                              else (new_state - state).detach()).abs_()
            if buffered:
                spare, state = state, new_state
            else:
                state = new_state
            if not check:
                continue
            peak = check_finite(network, state, offset + step_index, self.divergence,
                                describe_index)
            if not residual_here:
                continue
            floor = residual_floor(state, scale) if floor_might_bind(tol, peak, real, scale) \
                else None
            floored |= floor is not None
            if log.record(last_delta.amax(-1) * scale, step_index, tol, floor):
                break
        failure = None
        if tol > 0 and not bool(log.converged.all()):
            if last_delta is None:  # max_steps = 0: not a single step was taken
                last_delta = torch.zeros_like(state)
            # the floors, where the error may name rounding: where the largest residual may
            # be within FLOOR_MARGIN of them (peak is the last step's, always a check)
            worst = float(log.residual.max())
            floor = residual_floor(state, scale) \
                if floor_might_bind(worst, FLOOR_MARGIN * peak, real, scale) else None
            failure = not_settled(network, last_delta, log.residual, log.converged,
                                  log.history, offset + step_index, tol, describe_index,
                                  floor=floor)
        at_floor = _at_floor(log.converged, log.residual, tol) if floored else None
        return (state, log.steps, log.converged, log.residual, step_index, failure, log.trace,
                at_floor)

    def _finish(self, state: torch.Tensor, steps: torch.Tensor, converged: torch.Tensor,
                residual: torch.Tensor, n_steps: int, failure: RelaxationError | None,
                trace: list[float], at_floor: torch.Tensor | None = None, *, tol: float = 0.0,
                scale: float = 1.0) -> RelaxResult:
        """The result; ``on_failure`` applied, and a warning where samples settled at their
        residual floor above ``tol`` (``at_floor``; ``scale = τ/dt`` for its text)."""
        self._report_failure(failure, stacklevel=4)
        if at_floor is not None and bool(at_floor.any()):
            warnings.warn(floor_notice(residual.dtype, tol, scale), RuntimeWarning, stacklevel=4)
        else:
            at_floor = None
        return RelaxResult(state=state, steps=steps, converged=converged, residual=residual,
                           n_steps=n_steps, failure=failure, trace=trace, at_floor=at_floor)

    # ----------------------------------------------------------------- Gauss-Seidel
    def _gauss_seidel(self, network: Network, drive: dict, state: torch.Tensor,
                      params: Params | None, nudge: float, y: torch.Tensor | None,
                      max_steps: int | None, tol: float | None) -> RelaxResult:
        """Layer sweeps with steps ``ω·dt`` until their change is below the target, then
        the engine's criterion ``max|G(s) - s|·τ/dt < tol`` at the Euler map ``G``."""
        dt, max_steps, tol = self._budget(network, max_steps, tol)
        describe_index = network.layer_of_index
        omega = float(self.over_relaxation)
        sweep = fast_step.EulerMap(network, omega * dt, drive, params, nudge=nudge, y=y,
                                   sweep=True)
        euler = fast_step.EulerMap(network, dt, drive, params, nudge=nudge, y=y)
        if network.compiled.bounds:
            state = network.project(state)
            sweep.mark_in_bounds(state)
        used, target, trace, history = 0, tol, [], []
        scale = network.tau / dt
        # whether a floor may reach tol for some state within the divergence bound (which
        # the sweep's checks enforce): else the criterion is tol alone, as without floors
        might_bind = floor_might_bind(tol, self.divergence, state.real.dtype, scale)
        # with tol > 0 every round of sweeps ends in one Euler map evaluation that judges
        # it: the round's sweeps leave it room in the budget
        check = 1 if tol > 0 else 0
        while True:
            (state, steps, converged, residual, n_steps, failure,
             more, _) = self._euler(network, sweep, state, max_steps - used - check, target,
                                    network.tau / (omega * dt), describe_index, buffered=True,
                                    offset=used)
            steps = torch.where(steps >= 0, steps + used, steps)
            used, trace = used + n_steps, trace + more
            if tol <= 0:
                return self._finish(state, steps, converged, residual, used, failure, trace)
            # judged by the engine's own criterion at the user's tol, whatever the sweep's
            # own verdict (a later round sweeps to a tighter target: its failure said
            # nothing about tol): one Euler map evaluation; a residual at its floor counts
            used += 1
            delta = (euler(state) - state).abs()
            residual = delta.amax(-1) * scale
            history.append(residual)
            converged = residual < tol
            floor = residual_floor(state, scale) if might_bind else None
            if floor is not None:
                converged |= residual <= floor
            steps = torch.where(converged, torch.where(steps >= 0, steps, used),
                                torch.full_like(steps, -1))
            if bool(converged.all()):
                break
            # the budget is spent (another round needs a sweep and its check)
            if failure is not None or max_steps - used < 1 + check:
                failure = not_settled(network, delta, residual, converged, history, used,
                                      tol, describe_index, floor=floor)
                return self._finish(state, steps, converged, residual, used, failure, trace,
                                    _at_floor(converged, residual, tol), tol=tol, scale=scale)
            target /= 10.0  # the sweep's change understated the residual: sweep on
        failure = None
        if self.stability_iterations > 0:
            shape = state.shape
            project = network.project if network.compiled.bounds else None
            unstable, evaluations = self._unstable(network, euler, state.reshape(-1, shape[-1]),
                                                   shape, project, describe_index)
            used += evaluations
            if unstable is not None:
                failure = unstable[0]
                followed = self._follow_dynamics(network, euler, state, shape, unstable,
                                                 project, used, max_steps, tol, scale,
                                                 describe_index, trace)
                if followed is not None:
                    return followed
                steps, converged = _unsettled(steps, converged, unstable[2])
        return self._finish(state, steps, converged, residual, used, failure, trace,
                            _at_floor(converged, residual, tol), tol=tol, scale=scale)

    # ----------------------------------------------------------------- Anderson
    def _anderson(self, network: Network, step: Step, state: torch.Tensor,
                  project: Force | None, max_steps: int, tol: float, scale: float,
                  describe_index: Callable[[int], str]) -> RelaxResult:
        """Anderson-accelerated iteration of the Euler map ``G`` (type II, per sample).

        ``f_k = G(s_k) - s_k``; ``ΔF``, ``ΔG`` hold the last ``m`` differences of ``f`` and
        ``G``; ``γ = (ΔFᴴΔF + λI)⁻¹ ΔFᴴ f_k`` and ``s_{k+1} = Π(G(s_k) - ΔG γ)``. A sample
        is frozen at ``s_k`` once ``max|f_k|·τ/dt < tol``, or, at a check, once it is at
        or below its floor ``eps·max|G(s_k)|·τ/dt``; when the budget ends the others stay
        at their last evaluated iterate. Either way the residual reported is that of the
        state returned, ``max|G(s) - s|·τ/dt``.
        """
        shape = state.shape
        width = shape[-1]

        def G(flat: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            target = None if out is None else out.reshape(shape)
            return step(flat.reshape(shape), target).reshape(-1, width)

        def projected(flat: torch.Tensor) -> torch.Tensor:
            if project is None:
                return flat
            return project(flat.reshape(shape)).reshape(-1, width)

        # Every iterate is kept in the bounds (the map's outputs are, extrapolations are
        # projected), so the closed-form map may take its on-the-bounds forms of ρ, ρ'.
        G_iterate = G
        if project is not None and isinstance(step, fast_step.EulerMap):
            def G_iterate(flat: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
                target = None if out is None else out.reshape(shape)
                return step(flat.reshape(shape), target, in_bounds=True).reshape(-1, width)

        x = projected(state.reshape(-1, width).clone())
        n_samples = x.shape[0]
        real = x.real.dtype
        converged = torch.zeros(n_samples, dtype=torch.bool, device=x.device)
        steps = torch.full((n_samples,), -1, dtype=torch.long, device=x.device)
        residual = torch.full((n_samples,), math.inf, dtype=real, device=x.device)
        mixing = float(self.anderson_mixing)
        # a residual floor per unit of max|G(s)| (residual_floor), where one may reach tol
        # for some state within the divergence bound (the checks enforce it)
        floor_factor = torch.finfo(real).eps * scale \
            if floor_might_bind(tol, self.divergence, real, scale) else None
        secants = _AndersonHistory(n_samples, int(self.anderson_memory), width, x)
        # Work buffers, two of each: an iteration reads the previous one's f, mixed step and
        # iterate while it writes its own (fresh (samples, D) temporaries page-fault on CPU:
        # they made an iteration ~2x slower on a 128 x 510 float64 state).
        pairs = {name: (torch.empty_like(x), torch.empty_like(x))
                 for name in ("g", "f", "x") + (() if mixing == 1.0 else ("mixed",))}
        correction = torch.empty_like(x)
        f_prev = g_prev = None
        # each sample's best iterate (lowest residual) and its f: where it goes back to when
        # its map evaluation blows up, to go on with the plain dynamics (``fallen_back``)
        x_best, f_best = torch.empty_like(x), torch.empty_like(x)
        fallen_back = torch.zeros(n_samples, dtype=torch.bool, device=x.device)
        fallback_residual = torch.zeros(n_samples, dtype=real, device=x.device)
        history: list[torch.Tensor] = []
        trace: list[float] = []
        last_f = torch.zeros_like(x)
        best = torch.full((n_samples,), math.inf, dtype=real, device=x.device)
        recent = (best, best)  # the residuals of the two iterations before
        stuck = torch.zeros(n_samples, dtype=torch.bool, device=x.device)  # stalled once
        stalled_for = torch.zeros(n_samples, dtype=torch.long, device=x.device)
        without_best = torch.zeros(n_samples, dtype=torch.long, device=x.device)
        iteration = 0
        for iteration in range(1, max_steps + 1):
            parity = iteration % 2
            g = G_iterate(x, pairs["g"][parity])
            f = torch.sub(g, x, out=pairs["f"][parity])
            active = ~converged
            if f.is_complex():
                peak = f.abs().amax(-1)
            else:  # max(-min, max) without abs()'s copy; aminmax(dim=-1) is 10x slower
                # (abs_ on the per-sample maxima: an exactly zero f gives -min = -0.0, and
                # maximum(-0.0, 0.0) is -0.0, which was reported as the residual)
                peak = torch.maximum(f.amin(-1).neg_(), f.amax(-1)).abs_()
            # An extrapolation can land where the map blows up (FHN's cubic term: NaN within
            # a few steps on dense inputs) although the dynamics settle. Such a sample drops
            # this evaluation, goes back to its best iterate and follows the plain dynamics
            # (Euler steps) from there until they have halved its residual, then extrapolates
            # again with a fresh history. One that blows up under the plain dynamics
            # diverges: the finiteness check reports it.
            blown = active & ~fallen_back & ~(peak <= self.divergence)
            check = iteration % self.check_every == 0 or iteration == max_steps
            if check:  # an extrapolated iterate that ran off where the dynamics cannot (an
                # oscillator's phases drift without bound under extrapolation, not under
                # the dynamics) goes back too, before the finiteness check would report it
                size = g.abs().amax(-1) if g.is_complex() else torch.maximum(
                    g.amin(-1).neg_(), g.amax(-1))
                blown |= active & ~fallen_back & ~(size <= self.divergence)
            if iteration == 1:  # the plain step from the start: nothing to go back to
                fallen_back |= blown
            elif bool(blown.any()):
                rows = blown[:, None]
                x, f = torch.where(rows, x_best, x), torch.where(rows, f_best, f)
                g = torch.where(rows, x_best + f_best, g)
                peak = torch.where(blown, best / scale, peak)
                fallen_back |= blown
                fallback_residual = torch.where(blown, best, fallback_residual)
            elif bool(fallen_back.any()):
                fallen_back &= ~(peak * scale < 0.5 * fallback_residual) | stuck
            last_f = f
            residual = torch.where(active, peak * scale, residual)
            if tol > 0:
                below = residual < tol
                if check and floor_factor is not None:  # at its floor, from the size read
                    below |= residual <= size * floor_factor
                newly = active & below  # frozen at x, the iterate its residual is of
                steps = torch.where(newly, iteration, steps)
                converged |= newly
            done = tol > 0 and bool(converged.all())
            if check or done:
                check_finite(network, g.reshape(shape), iteration, self.divergence, describe_index)
                history.append(residual.clone())
                if self.record_trace:
                    trace.append(float(residual.max()))
            if done or iteration == max_steps:
                # the budget is spent: each sample ends at the iterate just evaluated, whose
                # residual is the one reported (a further extrapolation was returned, whose
                # residual nobody had evaluated)
                break
            # the best iterates (converged samples, frozen, may be copied too: then it is
            # mostly one copy, ~3x cheaper than the masked form)
            improved = (residual < best) | converged
            if bool(improved.all()):
                x_best.copy_(x)
                f_best.copy_(f)
            elif bool(improved.any()):
                rows = improved[:, None]
                torch.where(rows, x, x_best, out=x_best)
                torch.where(rows, f, f_best, out=f_best)
            # a sample whose residual repeats that of one of the two iterations before, for
            # STALL_ITERATIONS in a row, has stalled (a projected extrapolation that returns
            # to one point or alternates between two: it stayed at the start of a
            # hard-sigmoid net for 20,000 iterations): it goes back to its best iterate and
            # follows the dynamics from there on
            close = 1e-9 * residual
            repeats = active & ~fallen_back & (((residual - recent[0]).abs() <= close)
                                               | ((residual - recent[1]).abs() <= close))
            stalled_for = torch.where(repeats, stalled_for + 1, 0)
            # or, cycling through more points, has not bettered its best for STALL_PATIENCE
            without_best = torch.where((residual < best) | ~active | fallen_back,
                                       0, without_best + 1)
            recent = (residual, recent[0])
            best = torch.minimum(best, residual)
            stalled = (stalled_for >= STALL_ITERATIONS) | (without_best >= STALL_PATIENCE)
            if bool(stalled.any()):  # (for good: extrapolating again went back there)
                fallen_back |= stalled
                stuck |= stalled
                fallback_residual = torch.where(stalled, best, fallback_residual)
                rows = stalled[:, None]
                x, g = torch.where(rows, x_best, x), torch.where(rows, x_best + f_best, g)
                f = torch.where(rows, f_best, f)
            # restart a sample whose residual grew tenfold over its best (bad extrapolation),
            # and take the plain step where a sample follows the dynamics
            restart = (residual > 10 * best) | fallen_back
            # the mixed step s + ωf (= G(s) when ω = 1) is what Anderson extrapolates
            mixed = g if mixing == 1.0 else projected(
                torch.add(x, f, alpha=mixing, out=pairs["mixed"][parity]))
            if f_prev is not None:
                secants.add(f, f_prev, mixed, g_prev)
            f_prev, g_prev = f, mixed
            candidate = pairs["x"][parity]
            if secants.count:
                extrapolation = secants.extrapolation(self.anderson_ridge, real, out=correction)
                torch.sub(mixed, extrapolation, out=candidate)
                # projected Anderson: an extrapolation that leaves the box is projected back
                # (restarting there instead took 29 iterations, not 14, on the hard-sigmoid
                # 784-500-10 net); the plain step where it is not finite, then restart
                restart |= ~torch.isfinite(candidate.sum(-1))  # one reduction, not two
                candidate = projected(candidate)
                if bool(restart.any()):
                    candidate = torch.where(restart[:, None], g, candidate, out=candidate)
                    secants.forget(restart)
            else:  # the first iteration: the mixed step itself
                candidate = candidate.copy_(mixed)
            if bool(converged.any()):  # converged samples stay where they are
                candidate = torch.where(converged[:, None], x, candidate, out=candidate)
            x = candidate
        result = x  # a converged sample's iterate stayed frozen since
        leading = shape[:-1]
        steps, converged, residual = (steps.reshape(leading), converged.reshape(leading),
                                      residual.reshape(leading))
        failure = None
        if tol > 0 and not bool(converged.all()):
            failure = not_settled(network, last_f.reshape(shape).abs(), residual, converged,
                                  history, iteration, tol, describe_index,
                                  floor=None if floor_factor is None
                                  else residual_floor(result.reshape(shape), scale))
        elif tol > 0 and self.stability_iterations > 0:
            unstable, evaluations = self._unstable(network, step, result, shape, project,
                                                   describe_index)
            iteration += evaluations
            if unstable is not None:
                failure = unstable[0]
                followed = self._follow_dynamics(network, step, result, shape, unstable,
                                                 project, iteration, max_steps, tol, scale,
                                                 describe_index, trace)
                if followed is not None:
                    return followed
                steps, converged = _unsettled(steps, converged, unstable[2])
        return self._finish(result.reshape(shape), steps, converged, residual, iteration,
                            failure, trace, _at_floor(converged, residual, tol), tol=tol,
                            scale=scale)

    def _follow_dynamics(self, network: Network, step: Step, point: torch.Tensor,
                         shape: torch.Size, unstable: tuple[RelaxationError, torch.Tensor],
                         project: Force | None, used: int, max_steps: int, tol: float,
                         scale: float, describe_index: Callable[[int], str],
                         trace: list[float]) -> RelaxResult | None:
        """After an accelerated solver found a fixed point the dynamics leave: follow them
        instead (Euler from the point, pushed along the growing direction) with the budget
        that is left (``None`` when none is left: the caller reports the point)."""
        failure, direction, _ = unstable
        point = point.reshape(-1, shape[-1])
        remaining = max_steps - used
        if remaining < 1:
            return None
        push = 1e-3 * (1.0 + point.abs().amax(-1, keepdim=True)) * direction
        start = (point + push).reshape(shape)
        if project is not None:
            start = project(start)
        (state, steps, converged, residual, n_steps, failure, more,
         at_floor) = self._euler(network, step, start, remaining, tol, scale, describe_index,
                                 buffered=False, offset=used)
        steps = torch.where(steps >= 0, steps + used, steps)
        return self._finish(state, steps, converged, residual, n_steps + used, failure,
                            trace + more, at_floor, tol=tol, scale=scale)

    def _unstable(self, network: Network, step: Step, point: torch.Tensor,
                  shape: torch.Size, project: Force | None,
                  describe_index: Callable[[int], str]
                  ) -> tuple[tuple[RelaxationError, torch.Tensor, torch.Tensor] | None, int]:
        """Power iteration on the Euler map's Jacobian ``DG = I + dt·J`` at ``point``; returns
        the failure (with the growing direction and the unstable samples' mask, shaped like
        the state's leading dimensions) or ``None``, and the map evaluations used.

        ``v ← DG u`` with ``u = v/rms(v)``. Where the map is the plain closed-form Euler map
        of an unbounded model (no nudge, no extra force: a free phase of FHN), ``DG u`` is
        applied exactly, ``u + dt·J u`` (:class:`~neuroeq.linearization.EulerJacobian`, about
        a third of a map evaluation of FHN). Otherwise by finite differences,
        ``v ← (G(Π(s + h u)) - G(s))/h``: the perturbed states are projected, so the map
        takes its on-the-bounds forms (the dynamics' own, from states in the bounds). Either
        counts one evaluation per product. The growth per step is the geometric mean of
        ``rms(v)`` over the second half of the iterations; above ``1 + max(1e-6, 30√eps)``
        the dynamics leave the fixed point (a limit cycle around it, or divergence): kind
        ``"unstable"``. Where the network is symmetric and affine on its domain (Hopfield on
        its bounds, :func:`~neuroeq.engines.fast_step.certifying_sweep`), ``G`` is a layer
        sweep instead: it contracts exactly where the dynamics are stable, and about as
        fast as the square of the Euler map's rate (Hopfield 784-500-10: 7 products
        instead of 25).

        It stops early, at any iteration, once every sample's perturbation has shrunk to
        ``P_k = rms(DGᵏu₀) < δ/√D`` (``δ`` = :data:`STABILITY_CERTIFICATE`) and still
        shrinks. Any eigenvalue ``μ`` of ``DG`` with left eigenvector ``l`` (``‖l‖ = 1``)
        bounds ``√D·P_k ≥ |μ|ᵏ·|⟨l, u₀⟩|``, and ``⟨l, u₀⟩ ~ N(0, 1)`` for the Gaussian start,
        so ``|μ| ≥ 1`` passes unseen with probability below ``0.8·δ``.
        """
        width = shape[-1]
        real = point.real.dtype
        eps, tiny = torch.finfo(real).eps, torch.finfo(real).tiny
        bounded = project is not None and not point.is_complex()
        sweep = None if point.is_complex() or len(shape) != 2 else \
            fast_step.certifying_sweep(step)
        if sweep is not None:  # its growth decides the dynamics' stability, and it is faster
            step = sweep
        options = {"in_bounds": True} if bounded and isinstance(step, fast_step.EulerMap) \
            else {}

        def G(flat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            """``G(flat)`` written into ``out`` (a generic step returns a new tensor)."""
            value = step(flat.reshape(shape), out.reshape(shape), **options)
            if value.data_ptr() != out.data_ptr():
                out.copy_(value.reshape(-1, width))
            return out

        exact = None if sweep is not None else _euler_jacobian(step, point, shape, project)
        generator = torch.Generator(device=point.device).manual_seed(0)
        # drawn in float32 (5x faster than float64 on CPU: 2.3 ms for a (128, 510) start)
        u = torch.randn(point.shape, generator=generator, dtype=torch.float32,
                        device=point.device).to(point.dtype)
        u = u.div_(_rms(u)[:, None])
        # work buffers (fresh (samples, D) temporaries page-fault on CPU: with eight of them
        # an iteration cost 4.6 Euler steps of the 784-500-10 net)
        image = torch.empty_like(point)
        if exact is None:
            h = math.sqrt(eps) * (1.0 + point.abs().amax(-1, keepdim=True))
            base = G(point, torch.empty_like(point))
            trial = torch.empty_like(point)
            log_h = h.squeeze(-1).log()
        certificate = math.log(STABILITY_CERTIFICATE) - 0.5 * math.log(width)
        shrink = torch.zeros(point.shape[0], dtype=real, device=point.device)
        logs, evaluations = [], 1  # the linearisation at the point, or G(point)
        for _ in range(self.stability_iterations):
            if exact is not None:
                difference = exact(u, image)  # v itself
            else:
                torch.addcmul(point, h, u, out=trial)
                if bounded:
                    project(trial.reshape(shape))
                difference = G(trial, image).sub_(base)  # h·v: h cancels in u = v/rms(v)
            norm = torch.linalg.vector_norm(difference, dim=-1).div_(math.sqrt(width))
            norm = norm.clamp_min_(tiny)
            log_norm = norm.log() if exact is not None else norm.log() - log_h  # log rms(v)
            logs.append(log_norm)
            shrink += log_norm
            image, u = u, difference.div_(norm[:, None])
            evaluations += 1
            if bool(((shrink < certificate) & (log_norm < 0)).all()):
                return None, evaluations
        growth = torch.exp(torch.stack(logs[len(logs) // 2:]).mean(0))
        unstable = growth > 1.0 + max(1e-6, 30.0 * math.sqrt(eps))
        if not bool(unstable.any()):
            return None, evaluations
        leading = shape[:-1]
        samples = sample_list(unstable.reshape(leading))
        direction = u.abs()[unstable].amax(0)
        layer = describe_index(int(direction.argmax()))
        worst = float(growth.max())
        measured = (f"the Euler map grows perturbations by {worst:.4g} per step > 1: a limit "
                    "cycle or divergence around it") if sweep is None else (
            f"a layer sweep grows perturbations by {worst:.4g} per sweep > 1: with this "
            "symmetric coupling the flow's Jacobian has an eigenvalue ≥ 0 there, a saddle "
            "or a maximum of the energy")
        return (RelaxationError(
            f"layer {layer!r}: {network.model.name} state: the accelerated solver found a "
            f"fixed point the dynamics leave ({measured}) for samples "
            f"{short(samples)}; the state does not settle there{stability_hint(network)}",
            kind="unstable", layer=layer, samples=samples, residual=worst),
            torch.where(unstable[:, None], u, torch.zeros_like(u)),
            unstable.reshape(leading)), evaluations


def _at_floor(converged: torch.Tensor, residual: torch.Tensor, tol: float
              ) -> torch.Tensor | None:
    """The samples that count as settled although their residual is not below ``tol`` (it
    reached their floor, :func:`~neuroeq.engines.failures.residual_floor`)."""
    return converged & ~(residual < tol) if tol > 0 else None


def _unsettled(steps: torch.Tensor, converged: torch.Tensor, unstable: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` and ``converged`` with the samples at an unstable fixed point marked as
    not settled (``-1``, ``False``): the dynamics leave the point the solver found."""
    return torch.where(unstable, -1, steps), converged & ~unstable


def _euler_jacobian(step: Step, point: torch.Tensor, shape: torch.Size,
                    project: Force | None) -> EulerJacobian | None:
    """The exact ``DG`` of ``step`` at ``point`` where it applies: the closed-form Euler map
    (not a sweep) of an unbounded model, real states, no nudge and no extra force (whose
    Jacobians the linearisation of ``F`` does not hold); else ``None``."""
    if not (isinstance(step, fast_step.EulerMap) and project is None and not step.sweep
            and step.nudge == 0.0 and step.force is None and len(shape) == 2
            and not point.is_complex()):
        return None
    linear = Linearization(step.network, point.reshape(shape), step.drive, step.params)
    return EulerJacobian(linear, step.dt)


def _project_differentiable(network: Network, state: torch.Tensor) -> torch.Tensor:
    pieces = []
    for block in network.blocks:
        piece = state[..., block.start:block.stop]
        if block.variable in network.compiled.bounds:
            low, high = network.compiled.bounds[block.variable]
            piece = piece.clamp(low, high)
        pieces.append(piece)
    return torch.cat(pieces, dim=-1)


def _rms(values: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension (complex values by their modulus)."""
    return torch.linalg.vector_norm(values, dim=-1).div_(math.sqrt(values.shape[-1]))


class _AndersonHistory:
    """The last ``m`` secant pairs ``(Δf, ΔG)`` of Anderson's iteration, per sample, in ring
    buffers ``(samples, m, D)``, with the Gram matrix ``Γ_ij = ⟨Δf_i, Δf_j⟩`` and the
    right-hand side ``r_j = ⟨Δf_j, f⟩`` kept up to date: a new pair ``Δf = f - f_prev``
    adds one Gram row, and ``r_j ← r_j + ⟨Δf_j, Δf⟩`` for the others (``O(m·D)`` per step
    instead of ``O(m²·D)``, and no stacking)."""

    def __init__(self, n_samples: int, memory: int, width: int, like: torch.Tensor):
        # slots past ``count`` are never read, so the buffers need no zero fill (a fresh
        # (samples, m, D) fill page-faults: ~0.6 ms each on a 128 × 510 float64 state)
        self.delta_f = like.new_empty(n_samples, memory, width)
        self.delta_g = like.new_empty(n_samples, memory, width)
        self.gram = like.new_zeros(n_samples, memory, memory)
        self.rhs = like.new_zeros(n_samples, memory)
        self.memory, self.count, self.slot = memory, 0, 0

    def add(self, f: torch.Tensor, f_prev: torch.Tensor, g: torch.Tensor,
            g_prev: torch.Tensor) -> None:
        """Store the pair ``(f - f_prev, g - g_prev)`` (each ``(samples, D)``) in place of
        the oldest, and bring ``Γ`` and ``r`` to the new residual ``f``."""
        k = self.slot
        filled = min(self.count + 1, self.memory)  # slots 0..filled-1 hold pairs after this
        delta_f = torch.sub(f, f_prev, out=self.delta_f[:, k])
        torch.sub(g, g_prev, out=self.delta_g[:, k])
        # ⟨Δf_j, Δf_new⟩ for every kept j: one (1 × D)·(D × filled) product per sample
        # against the history's transposed view (no copy). 205-215 µs on a 128 × 10 × 532
        # float64 history, against 500-630 µs for multiply-and-sum (which also wrote a
        # (samples, m, D) temporary) and ~1 ms for the (filled × D)·(D × 1) orientation
        column = torch.bmm(delta_f.unsqueeze(-2),
                           self.delta_f[:, :filled].conj().transpose(-1, -2)).squeeze(-2)
        self.gram[:, :filled, k] = column
        self.gram[:, k, :filled] = column.conj()
        self.rhs[:, :filled] += column  # ⟨Δf_j, f⟩ = ⟨Δf_j, f_prev⟩ + ⟨Δf_j, Δf_new⟩
        self.rhs[:, k] = torch.linalg.vecdot(delta_f, f)  # Σ conj(Δf)·f, no temporary
        self.slot = (k + 1) % self.memory
        self.count = filled

    def extrapolation(self, ridge: float, real: torch.dtype, out: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """``ΔG γ`` with ``γ = (Γ + λI)⁻¹ r``, ``λ = ridge·tr(Γ)/m`` (+ tiny), per sample
        (written into ``out``, ``(samples, D)``, when given). A sample whose system is
        singular to working precision (a history of differences at rounding level: the
        sample is at rest) gets ``γ = 0``, the plain mixed step."""
        c = self.count
        gram = self.gram[:, :c, :c]
        shift = ridge * gram.diagonal(dim1=-2, dim2=-1).real.sum(-1) / c + torch.finfo(real).tiny
        system = gram.clone()
        system.diagonal(dim1=-2, dim2=-1).add_(shift[:, None])
        gamma, info = torch.linalg.solve_ex(system, self.rhs[:, :c, None])
        # (no check on the host first: that would wait for the device at every iteration)
        gamma = torch.where((info != 0)[:, None, None], 0.0, gamma)
        weights = gamma.transpose(-1, -2)
        if out is None:
            return (weights @ self.delta_g[:, :c]).squeeze(-2)
        torch.bmm(weights, self.delta_g[:, :c], out=out.unsqueeze(-2))
        return out

    def forget(self, samples: torch.Tensor) -> None:
        """Zero the history of the samples in the boolean mask ``samples`` (a restart)."""
        for buffer in (self.delta_f, self.delta_g, self.gram, self.rhs):
            buffer[samples] = 0
