"""Dyadic EP (Scurria, Vanden Abeele, Mognetti, Massar 2026, arXiv 2602.03670)."""

from __future__ import annotations

import dataclasses

import torch

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.linearization import Linearization
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.ep import check_beta
from neuroeq.rules.phases import (
    active_mask,
    combine,
    mean_cost,
    readout_gradients,
    velocity_vjp,
)


class DyadicEP(GradientEstimator):
    """Dyadic EP: two coupled copies, midpoint ``m`` and difference ``d``, from
    ``m = s*, d = 0``:

    ``dm/dt = F(m)``, ``dd/dt = J(m)ᵀ d - (β/τ) c(m)``,

    the saddle flow of ``ℰ(m, d) = βC(m) - τ dᵀF(m)``. At rest ``d* = (β/τ) J⁻ᵀ c`` exactly
    (linear in β: no finite-nudge bias), ``λ = τ d*/β`` and ``ĝ = ∂C/∂θ - λᵀ ∂F/∂θ(m*)``.
    The physical copies are ``s± = m ± d/2``. Exact for any β and any coupling. The flow
    of ``d`` is linear in ``d``, so it is integrated as ``e = d/β`` (``de/dt = J(m)ᵀe -
    c(m)/τ``, the same flow divided by β): the engine's tolerance then bounds the adjoint
    ``λ = τe`` itself, and the accuracy does not fall as β shrinks. The result's ``nudged``
    entry holds ``(m, d)``.

    Projected dynamics (a unit held at a bound of ``[bounds]`` with ``F`` pushing out):
    ``m`` is projected like the state, and a pinned unit's row of ``J`` is ``-1/τ`` with
    no ``∂F/∂θ`` (as in the implicit-differentiation oracle): ``dd/dt = Jᵀ(μ d) - (1 - μ)
    d/τ - (β/τ) c``, ``μ`` the free units' mask at ``s*``, and the adjoint ``μλ``.
    """

    name = "dyadic"
    exact_for = "any stable dynamics, any coupling, any beta"
    exact_in = tuple((kind, "for any beta") for kind in ("gradient", "skew_gradient", "general"))

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None):
        super().__init__(engine, nudged_steps)
        self.beta = check_beta(beta)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        n = network.state_size
        drive = free.drive if free.drive is not None else network.drive(x)
        bounded = bool(network.compiled.bounds)
        if bounded:  # μ: 1 for units free to move at s*, 0 for units pinned at a bound
            with torch.no_grad():
                mask = active_mask(network, free.state, network.velocity(free.state, drive))
            pinned_rate = (1 - mask) / network.tau

        def coupled_velocity(z: torch.Tensor) -> torch.Tensor:
            m, e = z[..., :n], z[..., n:]  # e = d/β
            linear = Linearization(network, m, drive)  # F(m) and e ↦ J(m)ᵀe, closed form
            response = (linear.vjp(mask * e) - pinned_rate * e if bounded
                        else linear.vjp(e))
            return torch.cat([linear.velocity,
                              response - network.cost_gradient(m, y) / network.tau], dim=-1)

        def project(z: torch.Tensor) -> torch.Tensor:  # m into the bounds, e as it is
            return torch.cat([network.project(z[..., :n]), z[..., n:]], dim=-1)

        def describe(index: int) -> str:
            if index < n:
                return f"midpoint m of {network.layer_of_index(index)}"
            return f"difference d (as d/β) of {network.layer_of_index(index - n)}"

        start = torch.cat([free.state, torch.zeros_like(free.state)], dim=-1)
        with torch.no_grad():
            joint = self.engine.integrate(network, coupled_velocity, start,
                                          project=project if bounded else None,
                                          describe_index=describe,
                                          max_steps=self.nudged_steps)
        m, e = joint.state[..., :n], joint.state[..., n:]
        adjoint = e * network.tau
        if bounded:
            adjoint = adjoint * mask
        joint = dataclasses.replace(joint, state=torch.cat([m, e * self.beta], dim=-1))
        grads = combine(velocity_vjp(network, m, x, adjoint, drive),
                        readout_gradients(network, m, y))
        return Estimate(grads, mean_cost(network, free.state, y), free, {"dyadic": joint})
