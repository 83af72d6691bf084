"""Dyadic EP (Scurria, Vanden Abeele, Mognetti, Massar 2026, arXiv 2602.03670)."""

from __future__ import annotations

import torch

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.linearization import Linearization
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.ep import check_beta
from neuroeq.rules.phases import combine, mean_cost, readout_gradients, velocity_vjp


class DyadicEP(GradientEstimator):
    """Dyadic EP: two coupled copies, midpoint ``m`` and difference ``d``, from
    ``m = s*, d = 0``:

    ``dm/dt = F(m)``, ``dd/dt = J(m)ᵀ d - (β/τ) c(m)``,

    the saddle flow of ``ℰ(m, d) = βC(m) - τ dᵀF(m)``. At rest ``d* = (β/τ) J⁻ᵀ c`` exactly
    (linear in β: no finite-nudge bias), ``λ = τ d*/β`` and ``ĝ = ∂C/∂θ - λᵀ ∂F/∂θ(m*)``.
    The physical copies are ``s± = m ± d/2``. Exact for any β and any coupling.
    """

    name = "dyadic"
    exact_for = "any stable dynamics, any coupling, any beta"

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None):
        super().__init__(engine, nudged_steps)
        self.beta = check_beta(beta)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        n = network.state_size
        drive = free.drive if free.drive is not None else network.drive(x)
        nudge = self.beta / network.tau

        def coupled_velocity(z: torch.Tensor) -> torch.Tensor:
            m, d = z[..., :n], z[..., n:]
            linear = Linearization(network, m, drive)  # F(m) and d ↦ J(m)ᵀd, closed form
            return torch.cat([linear.velocity,
                              linear.vjp(d) - nudge * network.cost_gradient(m, y)], dim=-1)

        def describe(index: int) -> str:
            if index < n:
                return f"midpoint m of {network.layer_of_index(index)}"
            return f"difference d of {network.layer_of_index(index - n)}"

        start = torch.cat([free.state, torch.zeros_like(free.state)], dim=-1)
        with torch.no_grad():
            joint = self.engine.integrate(network, coupled_velocity, start,
                                          describe_index=describe,
                                          max_steps=self.nudged_steps)
        m, d = joint.state[..., :n], joint.state[..., n:]
        adjoint = d * (network.tau / self.beta)
        grads = combine(velocity_vjp(network, m, x, adjoint, drive),
                        readout_gradients(network, m, y))
        return Estimate(grads, mean_cost(network, free.state, y), free, {"dyadic": joint})
