"""Vector-field EP (Scellier et al. 2018): the baseline for non-gradient dynamics."""

from __future__ import annotations

import torch

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.ep import check_beta
from neuroeq.rules.phases import combine, mean_cost, nudged_phase, readout_gradients, velocity_vjp


class VectorFieldEP(GradientEstimator):
    """Vector-field EP: nudged dynamics ``F(s) - (β/τ) c``; estimate
    ``ĝ = -(1/β)(∂F/∂θ)ᵀ(s_β - s*)·τ`` (centered: ``(s_{+β} - s_{-β})/2β``).

    Linearised, ``s_β - s* ≈ (β/τ) J⁻¹ c`` while the true gradient needs ``J⁻ᵀ c``: biased
    by the non-reciprocal part of ``J``. Exact as β → 0 when ``J`` is symmetric, and on
    skew-gradient models with symmetric coupling (``J = -QH/τ``, ``Q = ±1`` diagonal), whose
    parameters and cost act on the ``Q = 1`` variables only: there the two ``Q`` factors
    cancel (FHN; ``tests/rules/test_ep.py``).
    """

    name = "vf"
    runs_on_brian2 = True
    exact_for = ("dynamics with a symmetric Jacobian, and skew-gradient models with "
                 "symmetric coupling, as beta -> 0")
    exact_in = (("gradient", "as beta -> 0: J = -H/tau is symmetric there"),
                ("skew_gradient", "as beta -> 0, for the same reason: the weights and the "
                                  "nudge act on the coupled variable, where Q = 1, so J^-1 c "
                                  "and J^-T c agree on it"),)

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None,
                 centered: bool = True):
        super().__init__(engine, nudged_steps)
        self.beta = check_beta(beta)
        self.centered = centered

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        plus = nudged_phase(self.engine, network, x, y, self.beta, free,
                            max_steps=self.nudged_steps)
        phases = {"+beta": plus}
        if self.centered:
            minus = nudged_phase(self.engine, network, x, y, -self.beta, free,
                            max_steps=self.nudged_steps)
            phases["-beta"] = minus
            response = (plus.state - minus.state) / (2 * self.beta)
        else:
            response = (plus.state - free.state) / self.beta
        adjoint = response * network.tau
        grads = combine(velocity_vjp(network, free.state, x, adjoint, free.drive),
                        readout_gradients(network, free.state, y))
        return Estimate(grads, mean_cost(network, free.state, y), free, phases)
