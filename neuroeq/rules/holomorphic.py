"""Holomorphic EP (Laborieux & Zenke 2022, "Holomorphic Equilibrium Propagation Computes
Exact Gradients Through Finite Size Oscillations").

For analytic dynamics the nudged state ``s_β`` and ``f(β) = ∂E/∂θ(s_β)`` are holomorphic
in a complex nudge ``β``, and ``f'(0) = dL/dθ`` (the EP identity). Cauchy's formula on the
circle ``|β| = r`` sampled at ``N`` points ``β_k = r e^{2πik/N}`` gives

``∇_θ L = (1/(N r)) Σ_k ∂E/∂θ(s_{β_k}) e^{-2πik/N}``  (real part),

exact for finite ``r`` up to the aliasing of the higher Taylor coefficients,
``O((r/R)^N)`` with ``R`` the radius of analyticity of ``β ↦ s_β``; ``N = 2`` is centered
EP. Each complex nudged phase relaxes ``ds/dt = F(s) - (β_k/τ) ∂C/∂s`` in complex arithmetic
from the free state, with its own Euler loop here (the real engine is left untouched).
Exact for gradient and skew-gradient models (nudging the coupled variable) with symmetric
coupling whose expressions are analytic (``tanh``, logistic, ``sin``, polynomials; not
``clip`` or comparisons).
"""

from __future__ import annotations

import cmath
import math
import warnings

import torch

from neuroeq.checks import positive_number, whole_number
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.phases import combine, full_names, mean_cost, readout_gradients

_COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}
#: relative difference between the N- and N/2-point estimates above which holomorphic EP
#: warns (its square, about the N-point estimate's own error, is then above 1e-3)
ALIASING_WARNING = 0.03


class HolomorphicEP(GradientEstimator):
    """Holomorphic EP: ``N`` complex nudges ``β_k = r e^{2πik/N}`` (``beta`` is ``r``) and
    ``ĝ = Re (1/(N r)) Σ_k ∂E/∂θ(s_{β_k}) e^{-2πik/N}``; exact for finite ``r`` (error
    ``O((r/R)^N)``) on analytic gradient / skew-gradient models with symmetric coupling.
    ``R`` is the model's: the default ``r = 0.1`` gives relative errors of 1e-11 on
    ``hopfield_smooth`` and ``fhn`` (4-6-3, 16 points), where ``r = 0.5`` left 0.14 on
    ``hopfield_smooth`` (``bench/holomorphic_radius.py``, docs/gradcheck_more.md).
    """

    name = "holomorphic"
    needs_analytic_dynamics = True
    exact_for = ("analytic gradient and skew-gradient models with symmetric coupling, "
                 "finite r (error O((r/R)^N))")
    exact_in = (("gradient", "for finite r (needs analytic dynamics)"),
                ("skew_gradient", "for finite r (needs analytic dynamics)"))

    def __init__(self, beta: float = 0.1, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None, points: int = 16):
        super().__init__(engine, nudged_steps)
        self.beta = positive_number(beta, "radius r (holomorphic EP takes it as beta)")
        self.points = whole_number(points, "points (2 is centered EP)", 2)
        self._aliasing_warned: set[str] = set()  # models already warned about

    def describe(self) -> dict:
        return {**super().describe(), "r": self.beta, "points": self.points}

    def _check(self, network: Network) -> None:
        from neuroeq.classify import non_analytic_functions

        model = network.model
        if model.structural_class == "general":
            raise ConfigError(f"holomorphic EP needs a gradient or skew-gradient model; "
                              f"{model.name!r} is general (use asym or dyadic)")
        if network.coupling != "symmetric":
            raise ConfigError(f"holomorphic EP needs symmetric coupling, got "
                              f"{network.coupling!r} (use asym or dyadic)")
        if network.compiled.bounds:
            raise ConfigError(f"holomorphic EP needs unbounded (analytic) dynamics; model "
                              f"{model.name!r} clamps {sorted(network.compiled.bounds)}")
        bad = non_analytic_functions(model)
        if bad:
            raise ConfigError(f"holomorphic EP needs analytic dynamics; model {model.name!r} "
                              f"uses {', '.join(bad)} (use a smooth rate such as "
                              "hopfield_smooth's logistic)")

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        self._check(network)
        cdtype = _COMPLEX[network.dtype]
        params = network.dynamics_parameters()
        complex_params = {k: v.detach().to(cdtype) for k, v in params.items()}
        drive = {k: v.detach().to(cdtype) for k, v in network.drive(x).items()}
        betas = [self.beta * cmath.exp(2j * math.pi * k / self.points)
                 for k in range(self.points)]
        nudge = torch.tensor(betas, dtype=cdtype, device=network.device).view(-1, 1, 1)
        start = free.state.detach().to(cdtype).expand(self.points, *free.state.shape).clone()
        phases = self._relax(network, y, start, nudge / network.tau, complex_params, drive)
        states = phases.state
        # Re Σ_k w_k E_hebb(s_k; θ) is linear in θ: its θ-gradient is the estimate.
        weights = torch.tensor([cmath.exp(-2j * math.pi * k / self.points)
                                / (self.points * self.beta) for k in range(self.points)],
                               dtype=cdtype, device=network.device).view(-1, 1)
        leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        # (unsettled phases, let through by on_failure, say nothing about aliasing)
        halved = self.points % 2 == 0 and self.points >= 4 and phases.failure is None
        with torch.enable_grad():
            cast = {k: v.to(cdtype) for k, v in leaves.items()}
            energy = network.hebbian_energy(states, x, cast)  # (points, batch)
            total = (weights * energy).sum().real / x.shape[0]
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True,
                                        retain_graph=halved)
            if halved:  # the N/2-point rule on every other node: weights 2·w_2k
                half = (2.0 * weights[::2] * energy[::2]).sum().real / x.shape[0]
                coarse = torch.autograd.grad(half, list(leaves.values()), allow_unused=True)
        names = full_names(network)
        estimate = {names[k]: (g if g is not None else torch.zeros_like(leaves[k]))
                    for k, g in zip(leaves, grads, strict=True)}
        diagnostics = {}
        if halved:
            diagnostics["aliasing"] = self._aliasing(network, grads, coarse)
        estimate = combine(estimate, readout_gradients(network, free.state, y))
        return Estimate(estimate, mean_cost(network, free.state, y), free,
                        {"complex": phases}, diagnostics)

    def _aliasing(self, network: Network, fine: tuple, coarse: tuple) -> float:
        """``‖ĝ_N - ĝ_{N/2}‖ / ‖ĝ_N‖`` over the dynamics' parameters, the ``N/2``-point
        estimate taken from every other node (no extra phase). Aliasing falls as
        ``(r/R)^N``, so this is about the ``N/2``-point error and its square the ``N``-point
        one: a warning when it exceeds :data:`ALIASING_WARNING` (``r`` near or beyond the
        radius of analyticity ``R``), once per rule object and model."""
        pairs = [(f, c) for f, c in zip(fine, coarse, strict=True) if f is not None]
        if not pairs:
            return 0.0
        difference = math.sqrt(sum(float((f - c).square().sum()) for f, c in pairs))
        size = math.sqrt(sum(float(f.square().sum()) for f, _ in pairs))
        aliasing = difference / size if size > 0 else (0.0 if difference == 0 else math.inf)
        if aliasing > ALIASING_WARNING and network.model.name not in self._aliasing_warned:
            self._aliasing_warned.add(network.model.name)  # once per rule and model: the
            warnings.warn(  # figure changes with each batch, so Python's filter would repeat it
                f"holomorphic EP on {network.model.name}: the {self.points}-point estimate and "
                f"the {self.points // 2}-point one on every other node differ by "
                f"{aliasing:.2g} (relative), so r = {self.beta:g} is near or beyond the radius "
                "where s_beta is analytic and the estimate may be far from the gradient; "
                "lower r (e.g. by 10) or raise points (Estimate.diagnostics['aliasing']; "
                "this rule warns once, later estimates report it there only)",
                RuntimeWarning, stacklevel=4)
        return aliasing

    def _relax(self, network: Network, y: torch.Tensor, state: torch.Tensor,
               nudge: torch.Tensor, params: dict, drive: dict) -> RelaxResult:
        """Euler relaxation of the complex nudged phases (points, batch, N) to rest (the
        ``∂C/∂s`` of the readout's closed form is analytic, so complex states take it as
        they are). Phases that do not settle follow the engine's ``on_failure``; a
        divergence is always raised."""
        dt, max_steps, tol = self.engine.settings(network)
        max_steps = self.nudged_steps or max_steps
        residual = math.inf
        with torch.no_grad():
            for step in range(1, max_steps + 1):
                velocity = network.velocity(state, drive, params) - nudge * (
                    network.cost_gradient(state, y))
                state = state + dt * velocity
                if step % self.engine.check_every == 0 or step == max_steps:
                    residual = float(velocity.abs().max()) * network.tau
                    if not math.isfinite(residual):
                        raise RelaxationError(
                            f"holomorphic EP: the complex nudged phase of {network.model.name}"
                            f" diverged after {step} steps at r = {self.beta:g}; lower r",
                            kind="nan")
                    if residual < tol:
                        return _complex_phases(state, step, residual, True)
        if tol == 0.0:  # a fixed budget (the engine's tol = 0): the last state
            return _complex_phases(state, max_steps, residual, True)
        failure = RelaxationError(
            f"holomorphic EP: the complex nudged phases of {network.model.name} did not settle "
            f"after {max_steps} steps (max |ds/dt|*tau = {residual:.3g} > tol {tol:g}) at "
            f"r = {self.beta:g}; lower r (the radius must stay inside the region where "
            "s_beta is analytic) or raise max_steps", kind="not_converged", residual=residual)
        self.engine._report_failure(failure, stacklevel=4)
        return _complex_phases(state, max_steps, residual, False, failure)


def _complex_phases(state: torch.Tensor, steps: int, residual: float, settled: bool,
                    failure: RelaxationError | None = None) -> RelaxResult:
    """The ``N`` complex nudged phases (points, batch, N) as one :class:`RelaxResult`
    (per sample: the largest residual over the points)."""
    batch = state.shape[-2]
    return RelaxResult(state=state, steps=torch.full((batch,), steps if settled else -1),
                       converged=torch.full((batch,), settled),
                       residual=torch.full((batch,), residual), n_steps=steps,
                       failure=failure)


__all__ = ["HolomorphicEP"]
