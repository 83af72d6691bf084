"""Finite-nudge and path-integral EP for noisy (Gibbs) networks (Litman 2025,
"Equilibrium Propagation Without Limits", arXiv 2511.22024).

A network at temperature ``T`` samples ``ρ_β ∝ exp(-(E + βC)/T)`` (Langevin dynamics,
:class:`~neuroeq.engines.langevin.LangevinSampler`); its free energy is
``A(θ, β) = -T log Z_β`` and ``∂A/∂β = ⟨C⟩_β``. Both rules estimate the gradient of

``J_β(θ) = (A(θ, β) - A(θ, 0)) / β``

(Litman's objective ``A(θ, 1) - A(θ, 0)`` with the loss ``ℓ = βC``, divided by ``β`` so the
learning rate does not depend on ``β``). ``J_β → ⟨C⟩_0`` as ``β → 0`` and
``J_β → C(s*)`` as ``T → 0``, ``β → 0`` (the deterministic loss). The estimates are
batch means, exact for any finite ``β`` up to Monte Carlo error, which they report as a
standard error (``SampledEstimate.stderr``) from independent groups of chains.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neuroeq.checks import real_number, whole_number
from neuroeq.engines.langevin import LangevinSampler, check_gibbs_model
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.phases import full_names, gradients

if TYPE_CHECKING:
    from neuroeq.engines.langevin import GibbsSamples


class SampledEstimate(Estimate):
    """An :class:`Estimate` from Monte Carlo samples, with the standard error of each
    dynamics-parameter gradient (``stderr``, same keys and shapes; readout parameters
    have none) and the Metropolis acceptance per nudge."""

    def __init__(self, grads: dict[str, torch.Tensor], loss: float,
                 free: RelaxResult | None = None, nudged: dict[str, RelaxResult] | None = None,
                 *, stderr: dict[str, torch.Tensor] | None = None,
                 acceptance: torch.Tensor | None = None):
        super().__init__(grads, loss, free, nudged or {})
        self.stderr: dict[str, torch.Tensor] = stderr or {}
        self.acceptance = acceptance


class _GibbsRule(GradientEstimator):
    """Shared settings: nudge ``beta`` (0 < β ≤ 1), ``temperature``, sampler settings and
    ``groups`` (independent groups of chains for the standard error)."""

    samples_gibbs = True
    exact_for = ("gradient models with symmetric coupling at temperature T > 0, any finite "
                 "beta (objective (A(beta) - A(0))/beta)")
    exact_in = (("gradient", "exact for the Gibbs objective A(1)-A(0) at temperature T > 0"),)

    def __init__(self, beta: float = 1.0, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None, *, temperature: float = 0.05,
                 chains: int = 64, groups: int = 16, burn_in: int = 500, samples: int = 20,
                 thin: int = 10, dt: float | None = None, metropolis: bool = True,
                 seed: int = 0):
        super().__init__(engine, nudged_steps)
        beta = real_number(beta, "beta")
        if not 0 < beta <= 1:
            raise ConfigError(f"beta {beta} must lie in (0, 1] for {self.name} (the nudge "
                              "strength is the scale of the loss, up to the full loss)")
        groups = whole_number(groups, "groups", 2)
        if chains % groups:
            raise ConfigError(f"chains {chains} must be a multiple of groups {groups} "
                              "(at least 2 groups, for the standard error)")
        self.beta, self.groups = beta, groups
        self.sampler = LangevinSampler(temperature, dt=dt, burn_in=burn_in, samples=samples,
                                       thin=thin, chains=chains, metropolis=metropolis,
                                       seed=seed)

    @property
    def temperature(self) -> float:
        return self.sampler.temperature

    def check_range(self, network: Network) -> None:
        """The base checks and the sampler's (:meth:`LangevinSampler.check_range`)."""
        super().check_range(network)
        self.sampler.check_range(network, (0.0, self.beta))

    def random_state(self) -> dict[str, torch.Tensor]:
        return {"langevin": self.sampler.random_state()}

    def set_random_state(self, state: dict[str, torch.Tensor]) -> None:
        if "langevin" in state:
            self.sampler.set_random_state(state["langevin"])

    def describe(self) -> dict:
        return {**super().describe(), "beta": self.beta, "temperature": self.temperature,
                "chains": self.sampler.chains}

    def _grouped_gradient(self, network: Network, states: torch.Tensor, x: torch.Tensor,
                          weights: torch.Tensor) -> tuple[dict, dict]:
        """Mean and standard error over groups of ``∂/∂θ Σ weights · E_hebb(states)``.

        ``states`` (beta, sample, chain, batch, N); ``weights`` broadcastable to
        (beta, sample, chain, batch), already normalised per group.
        """
        n_beta, n_samples, chains, batch, n = states.shape
        G = self.groups
        grouped = states.reshape(n_beta, n_samples, G, chains // G, batch, n)
        weights = weights.expand(n_beta, n_samples, chains, batch).reshape(
            n_beta, n_samples, G, chains // G, batch)
        # one copy of every parameter per group: (G, ...) broadcast against the groups
        params = {name: value.detach().expand(G, *value.shape).clone().requires_grad_()
                  for name, value in network.dynamics_parameters().items()}
        # biases (G, n) -> (G, 1, 1, n); weights (G, a, b) -> (G, 1, a, b)
        with torch.enable_grad():
            shaped = {name: (p.view(G, 1, 1, *p.shape[1:]) if p.dim() == 2
                             else p.view(G, 1, *p.shape[1:])) for name, p in params.items()}
            energy = network.hebbian_energy(grouped, x, shaped)
            total = (energy * weights).sum()
            grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
        names = full_names(network)
        mean, stderr = {}, {}
        for (short, p), g in zip(params.items(), grads, strict=True):
            g = torch.zeros_like(p) if g is None else g
            g = g.reshape(G, *network.dynamics_parameters()[short].shape)
            mean[names[short]] = g.mean(0)
            stderr[names[short]] = g.std(0, unbiased=True) / math.sqrt(G)
        return mean, stderr

    def _readout(self, network: Network, states: torch.Tensor, y: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        """``⟨∂C/∂θ_readout⟩`` over the given samples (batch mean)."""
        params = dict(network.readout.named_parameters())
        if not params:
            return {}
        with torch.enable_grad():
            cost = network.cost(states.detach(), y)
            loss = cost.mean(tuple(range(cost.dim() - 1))).mean()
            grads = gradients(loss, list(params.values()))
        return {f"readout.{n}": g for n, g in zip(params, grads, strict=True) if g is not None}

    def _sample(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult, betas: list[float]) -> GibbsSamples:
        check_gibbs_model(network)
        return self.sampler.sample(network, x, y=y, betas=betas, init=free.state)


class FiniteNudgeEP(_GibbsRule):
    """Finite-nudge EP (Litman 2025): ``∇_θ (A(θ, β) - A(θ, 0))/β =
    (⟨∂E/∂θ⟩_{ρ_β} - ⟨∂E/∂θ⟩_{ρ_0}) / β``, exact for any finite ``β ≤ 1`` at ``T > 0``
    (Monte Carlo error only). Both phases share their noise (common random numbers).
    """

    name = "finite_nudge"

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        gibbs = self._sample(network, x, y, free, [0.0, self.beta])
        n_beta, n_samples, chains, batch, _ = gibbs.states.shape
        per_group = n_samples * (chains // self.groups) * batch
        sign = torch.tensor([-1.0, 1.0], dtype=network.dtype,
                            device=network.device).view(2, 1, 1, 1)
        weights = sign / (self.beta * per_group)
        grads, stderr = self._grouped_gradient(network, gibbs.states, x, weights)
        grads.update(self._readout(network, gibbs.states[1], y))
        with torch.no_grad():
            loss = float(network.cost(gibbs.states[0], y).mean())
        return SampledEstimate(grads, loss, free, stderr=stderr, acceptance=gibbs.acceptance)


class PathIntegralEP(_GibbsRule):
    """Path-integral EP (Litman 2025): ``∇_θ (A(θ, β) - A(θ, 0))/β =
    -(1/(Tβ)) ∫_0^β Cov_{ρ_b}[C, ∂E/∂θ] db``, the integral by ``points``-point
    Gauss-Legendre quadrature on ``[0, β]`` (all nudges sampled together with common
    noise). Exact up to the quadrature (spectrally accurate: the integrand is smooth in
    ``b``) and Monte Carlo error. Covariances are per data sample, within each group of
    chains (unbiased, ``n - 1``). The reported loss is ``⟨C⟩`` under the free distribution
    (``b = 0``, sampled beside the nodes), as :class:`FiniteNudgeEP` reports it.
    """

    name = "path_integral"
    exact_in = (("gradient", "exact for the Gibbs objective, up to the beta quadrature"),)

    def __init__(self, beta: float = 1.0, engine: TorchEngine | None = None,
                 nudged_steps: int | None = None, *, points: int = 6, **options: Any):
        super().__init__(beta, engine, nudged_steps, **options)
        nodes, weights = np.polynomial.legendre.leggauss(whole_number(points, "points", 1))
        self.nodes = [float(0.5 * self.beta * (n + 1)) for n in nodes]
        self.node_weights = [float(0.5 * self.beta * w) for w in weights]

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        has_readout = bool(list(network.readout.parameters()))
        # β = 0 first, for the loss (the cost under the free distribution, as FiniteNudgeEP
        # reports it; the first node lies at β(1 + n₀)/2, not at 0)
        betas = [0.0] + self.nodes + ([self.beta] if has_readout else [])
        gibbs = self._sample(network, x, y, free, betas)
        states = gibbs.states[1: 1 + len(self.nodes)]
        n_beta, n_samples, chains, batch, n = states.shape
        G = self.groups
        with torch.no_grad():
            cost = network.cost(states, y)  # (beta, sample, chain, batch)
            grouped = cost.reshape(n_beta, n_samples, G, chains // G, batch)
            centred = grouped - grouped.mean((1, 3), keepdim=True)
            draws = n_samples * (chains // G)
            if draws < 2:
                raise ConfigError("path-integral EP needs at least 2 draws per group "
                                  "(samples x chains/groups)")
            quadrature = torch.tensor(self.node_weights, dtype=network.dtype,
                                      device=network.device).view(-1, 1, 1, 1, 1)
            weights = -(quadrature * centred) / (self.temperature * self.beta * (draws - 1)
                                                 * batch)
        grads, stderr = self._grouped_gradient(
            network, states, x, weights.reshape(n_beta, n_samples, chains, batch))
        if has_readout:
            grads.update(self._readout(network, gibbs.states[-1], y))
        with torch.no_grad():
            loss = float(network.cost(gibbs.states[0], y).mean())
        return SampledEstimate(grads, loss, free, stderr=stderr, acceptance=gibbs.acceptance)


__all__ = ["FiniteNudgeEP", "PathIntegralEP", "SampledEstimate"]
