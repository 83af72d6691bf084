"""Classic, centered and skew-gradient Equilibrium Propagation (contrastive Hebbian)."""

from __future__ import annotations

import torch

from neuroeq.checks import real_number
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.phases import (
    combine,
    hebbian_difference,
    mean_cost,
    nudged_phase,
    readout_gradients,
)
from neuroeq.seeds import check_seed


def check_beta(beta: float) -> float:
    """``beta`` as a finite, non-zero ``float``."""
    beta = real_number(beta, "beta")
    if beta == 0.0:
        raise ConfigError("beta must be a finite, non-zero number, got 0")
    return beta


class ClassicEP(GradientEstimator):
    """Classic EP (Scellier & Bengio 2017).

    Nudged dynamics ``ds/dt = F(s) - (β/τ) ∂C/∂s`` (for ``F = -(1/τ)∇E``: descent on
    ``E + βC``); estimate ``ĝ = (1/β)(∂E/∂θ(s_β) - ∂E/∂θ(s*))``, so the weight change
    ``ΔW_l = -η ĝ_l ∝ (1/β)(ρ_l^β ρ_{l-1}^βᵀ - ρ_l* ρ_{l-1}*ᵀ)`` is contrastive Hebbian.
    Exact as ``β → 0`` for gradient systems, and for skew-gradient ones with symmetric
    coupling (:class:`SkewGradientEP` is this rule with a check of the model), error O(β).
    On asymmetric or feedforward coupling (and so for the centered and skew-gradient
    variants) it runs as a biased baseline: the estimate warns that it is not the gradient
    there and says so in ``Estimate.diagnostics["not_exact"]``.
    ``random_sign`` draws the sign of β per call from the rule's own generator, seeded
    with ``seed``; :func:`~neuroeq.training.train` restarts it from ``training.seed``
    (:meth:`~neuroeq.rules.base.GradientEstimator.reseed`).
    """

    name = "ep"
    exact_for = "gradient and skew-gradient models with symmetric coupling, as beta -> 0"
    exact_in = (("gradient", "as beta -> 0, error O(beta)"),
                ("piecewise_gradient", "as beta -> 0: diag rho'(u) J is symmetric, rho' in "
                                       "{0, 1}"))
    exact_couplings = ("symmetric",)
    runs_on_brian2 = True

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None,
                 random_sign: bool = False, seed: int = 0):
        super().__init__(engine, nudged_steps)
        self.beta = check_beta(beta)
        self.random_sign = random_sign
        self._generator = torch.Generator().manual_seed(check_seed(seed, "rule seed"))

    def random_state(self) -> dict[str, torch.Tensor]:
        return {"sign_generator": self._generator.get_state()}

    def set_random_state(self, state: dict[str, torch.Tensor]) -> None:
        if "sign_generator" in state:
            self._generator.set_state(state["sign_generator"])

    def _signed_beta(self) -> float:
        if self.random_sign and bool(torch.randint(0, 2, (1,), generator=self._generator)):
            return -self.beta
        return self.beta

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        beta = self._signed_beta()
        nudged = nudged_phase(self.engine, network, x, y, beta, free,
                            max_steps=self.nudged_steps)
        grads = hebbian_difference(network, nudged.state, free.state, x, 1.0 / beta)
        grads = combine(grads, readout_gradients(network, free.state, y))
        return Estimate(grads, mean_cost(network, free.state, y), free,
                        {f"{beta:+g}": nudged})


class CenteredEP(ClassicEP):
    """Centered (symmetric) EP (Laborieux et al. 2021).

    Nudges ``±β``: ``ĝ = (1/2β)(∂E/∂θ(s_{+β}) - ∂E/∂θ(s_{-β}))``; error O(β²).
    """

    name = "centered"
    exact_in = (("gradient", "as beta -> 0, error O(beta^2)"),
                ("piecewise_gradient", "as beta -> 0, error O(beta^2) (as for ep)"))

    def __init__(self, beta: float = 1e-3, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None):  # both signs, so no random_sign
        super().__init__(beta, engine, nudged_steps)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        plus = nudged_phase(self.engine, network, x, y, self.beta, free,
                            max_steps=self.nudged_steps)
        minus = nudged_phase(self.engine, network, x, y, -self.beta, free,
                            max_steps=self.nudged_steps)
        grads = hebbian_difference(network, plus.state, minus.state, x, 0.5 / self.beta)
        grads = combine(grads, readout_gradients(network, free.state, y))
        return Estimate(grads, mean_cost(network, free.state, y), free,
                        {"+beta": plus, "-beta": minus})


class _SkewGradientCheck:
    def _check_model(self, network: Network) -> None:
        model = network.model
        if model.structural_class != "skew_gradient":
            raise ConfigError(f"skew-gradient EP needs a skew-gradient model; {model.name!r} is "
                              f"{model.structural_class} (use 'ep' or 'centered')")


class SkewGradientEP(_SkewGradientCheck, ClassicEP):
    """Skew-gradient EP (Kendall 2026) for systems ``ds/dt = -(1/τ) Q ∇E``, e.g. FHN with
    ``Q = diag(1, -ε)``: nudge only the activators (``Q = 1`` there, checked at load), and
    ``ĝ = (1/β)(∂E/∂θ(s_β) - ∂E/∂θ(s*))`` is exact as ``β → 0`` (the ``Q`` factors cancel)
    with symmetric coupling; on asymmetric or feedforward coupling it warns that it is not
    (:class:`ClassicEP`).
    """

    name = "skew_ep"
    exact_in = (("skew_gradient", "nudging the coupled variable (Q = 1 there), as beta -> 0"),)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        self._check_model(network)
        return super().compute(network, x, y, free)


class CenteredSkewGradientEP(_SkewGradientCheck, CenteredEP):
    """Centered skew-gradient EP (Kendall 2026; the centering of Laborieux et al. 2021):
    nudges ``±β`` on the activators (``Q = 1``),
    ``ĝ = (1/2β)(∂E/∂θ(s_{+β}) - ∂E/∂θ(s_{-β}))``; exact as ``β → 0`` for skew-gradient
    models with symmetric coupling, error O(β²)."""

    name = "skew_centered"
    exact_in = (("skew_gradient", "as beta -> 0, error O(beta^2)"),)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        self._check_model(network)
        return super().compute(network, x, y, free)
