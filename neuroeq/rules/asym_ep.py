"""AsymEP (Scurria, Vanden Abeele, Mognetti, Massar 2026, arXiv 2602.03670)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.linearization import Linearization
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.ep import check_beta
from neuroeq.rules.phases import combine, mean_cost, nudged_phase, readout_gradients, velocity_vjp


def linearize(network: Network, state: torch.Tensor, x: torch.Tensor,
              drive: dict[int, torch.Tensor] | None = None
              ) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                         Callable[[torch.Tensor], torch.Tensor]]:
    """``(u ↦ J* u, u ↦ J*ᵀ u)`` at ``state`` (per sample; ``J* = ∂F/∂s`` there), in
    closed form (:class:`~neuroeq.linearization.Linearization`: two matmuls per edge and
    elementwise factors, no autograd per product); ``drive``: ``x``'s input currents when
    already computed."""
    linear = Linearization(network, state, network.drive(x) if drive is None else drive)
    return linear.jvp, linear.vjp


def linearize_autograd(network: Network, state: torch.Tensor, x: torch.Tensor
                       ) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                  Callable[[torch.Tensor], torch.Tensor]]:
    """The same products through ``torch.func`` (vjp/jvp of the whole velocity): the
    reference the closed form is tested against."""
    drive = network.drive(x)
    state = state.detach()

    def velocity(s: torch.Tensor) -> torch.Tensor:
        return network.velocity(s, drive)

    with torch.enable_grad():
        _, vjp = torch.func.vjp(velocity, state)

    def jvp(u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return torch.func.jvp(velocity, (state,), (u,))[1]

    return jvp, (lambda u: vjp(u)[0])


@dataclass
class AsymCorrection:
    """AsymEP's nudged-phase force ``s ↦ -2A(s - s*) = -(J* - J*ᵀ)(s - s*)``.

    ``anchor`` is the free state ``s*`` (batch, N) and ``jvp``/``vjp`` apply ``J*`` and
    ``J*ᵀ`` there. Calling it evaluates the force in torch; the Brian2 engine reads
    ``anchor`` and builds the same force inside its model.
    """

    anchor: torch.Tensor
    jvp: Callable[[torch.Tensor], torch.Tensor]
    vjp: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        displacement = s - self.anchor
        return self.vjp(displacement) - self.jvp(displacement)


class AsymEP(GradientEstimator):
    """AsymEP: keep the free phase; nudge with the non-reciprocal correction

    ``ds/dt = F(s) - (β/τ) c(s) - 2A(s - s*)``, ``A = (J* - J*ᵀ)/2``,

    so the linear response is governed by ``J* - 2A = J*ᵀ``: ``λ = τ(s_{+β} - s_{-β})/2β``
    solves ``J*ᵀλ = c`` and ``ĝ = ∂C/∂θ - λᵀ ∂F/∂θ(s*)``. Exact as ``β → 0`` for any
    coupling (feedforward included), error O(β²) when centered. Neuron ``i``'s correction
    ``Σ_j (ρ'(s_i*) W_ji - W_ij ρ'(s_j*))(s_j - s_j*)`` uses only the synapses between
    ``i`` and ``j``: local.
    """

    name = "asym"
    runs_on_brian2 = True
    exact_for = "any stable dynamics, any coupling, as beta -> 0"
    exact_in = (("gradient", "as beta -> 0"), ("skew_gradient", "as beta -> 0"),
                ("general", "as beta -> 0 (error O(beta^2) centered)"))

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None,
                 centered: bool = True):
        super().__init__(engine, nudged_steps)
        self.beta = check_beta(beta)
        self.centered = centered

    def correction(self, network: Network, free_state: torch.Tensor, x: torch.Tensor,
                   drive: dict[int, torch.Tensor] | None = None) -> AsymCorrection:
        """The force ``s ↦ -2A(s - s*) = -(J* - J*ᵀ)(s - s*)``."""
        jvp, vjp = linearize(network, free_state, x, drive)
        return AsymCorrection(free_state.detach(), jvp, vjp)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        force = self.correction(network, free.state, x, free.drive)
        plus = nudged_phase(self.engine, network, x, y, self.beta, free, force,
                            max_steps=self.nudged_steps)
        phases = {"+beta": plus}
        if self.centered:
            minus = nudged_phase(self.engine, network, x, y, -self.beta, free, force,
                            max_steps=self.nudged_steps)
            phases["-beta"] = minus
            response = (plus.state - minus.state) / (2 * self.beta)
        else:
            response = (plus.state - free.state) / self.beta
        grads = combine(velocity_vjp(network, free.state, x, response * network.tau,
                                     free.drive),
                        readout_gradients(network, free.state, y))
        return Estimate(grads, mean_cost(network, free.state, y), free, phases)
