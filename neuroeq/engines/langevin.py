"""Noisy (Gibbs) networks: Langevin dynamics at temperature ``T`` in torch.

For a gradient-class model (``F = -(1/τ)∇E``) with the output nudged by ``βC``:

``ds = [F(s) - (β/τ) ∂C/∂s] dt + sqrt(2T dt/τ) ξ``,  ``ξ ~ N(0, I)``,

whose stationary distribution is the Gibbs distribution ``ρ_β ∝ exp(-(E + βC)/T)``.
Euler-Maruyama steps (``metropolis=False``: the physical noisy network, stationary law
biased by O(dt)) or, with ``metropolis=True`` (default), each step is a Metropolis-adjusted
Langevin (MALA) proposal accepted with probability
``min(1, exp(-(U(s') - U(s))/T) q(s|s')/q(s'|s))``, ``U = E + βC``, which samples ``ρ_β``
exactly for any ``dt`` (proposals outside a model's ``[bounds]`` are rejected: the
truncated Gibbs distribution). Without Metropolis, bounded variables are clamped.

Many independent chains run in parallel (a leading ``chain`` dim) and several nudges
``β`` at once (a leading ``beta`` dim); all nudges share the same noise and the same
uniform draws (common random numbers), which makes differences between nudges far less
noisy than independent runs. The generator is seeded: the same sampler gives the same
samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neuroeq.checks import nudge_strength, within_dtype
from neuroeq.engines.settings import check_step_range, start_state
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.seeds import check_seed


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float; a :class:`ConfigError` unless it is positive and finite
    (``T = 0`` is the deterministic network, for the deterministic engines)."""
    T = float(temperature)
    if not (math.isfinite(T) and T > 0):
        raise ConfigError(f"temperature {temperature} must be a positive number (T = 0 is "
                          "the deterministic network: use the torch engine)")
    return T


@dataclass
class GibbsSamples:
    """Samples of ``ρ_β`` for each nudge.

    ``states``: ``(beta, sample, chain, batch, N)``; ``betas``: the nudges;
    ``acceptance``: mean Metropolis acceptance per nudge (1 without Metropolis).
    """

    states: torch.Tensor
    betas: torch.Tensor
    acceptance: torch.Tensor


@dataclass
class LangevinSampler:
    """Langevin sampling of a network's Gibbs distribution (see the module docstring).

    Args:
        temperature: ``T > 0`` in the energy's units.
        dt: step in seconds (default ``0.1·τ``).
        burn_in: steps before the first sample is kept.
        samples: samples kept per chain.
        thin: steps between kept samples.
        chains: independent chains per data sample.
        metropolis: MALA (exact stationary law) instead of plain Euler-Maruyama.
        seed: seeds the noise.
    """

    temperature: float
    dt: float | None = None
    burn_in: int = 500
    samples: int = 20
    thin: int = 10
    chains: int = 64
    metropolis: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.dt is not None and not (math.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"dt {self.dt} must be a positive number of seconds")
        for name in ("samples", "thin", "chains"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} must be at least 1")
        if int(self.burn_in) < 0:
            raise ConfigError(f"burn_in {self.burn_in} must be non-negative")
        self._generator = torch.Generator().manual_seed(check_seed(self.seed,
                                                                   "sampler seed"))

    def check_range(self, network: Network, betas: Sequence[float] = (0.0,)) -> None:
        """Refuse a step, nudge or temperature beyond the range of the network's dtype:
        :func:`check_step_range`, ``T`` and the noise's variance ``2T·dt/τ``."""
        dt = self.dt if self.dt is not None else 0.1 * network.tau
        for beta in betas:
            check_step_range(network, dt, beta)
        T = float(self.temperature)
        within_dtype(T, "temperature", network.dtype)
        within_dtype(2 * T * dt / network.tau, "the noise variance 2*T*dt/tau", network.dtype,
                     f" (T = {T:g}, dt = {dt:g} s, tau = {network.tau:g} s; lower T or dt)")

    def random_state(self) -> torch.Tensor:
        return self._generator.get_state()

    def set_random_state(self, state: torch.Tensor) -> None:
        self._generator.set_state(state)

    def sample(self, network: Network, x: torch.Tensor, *, y: torch.Tensor | None = None,
               betas: Sequence[float] = (0.0,), init: torch.Tensor | None = None
               ) -> GibbsSamples:
        """Sample ``ρ_β`` for every ``β`` in ``betas``; ``x`` (batch, n_in) clamped.

        ``init`` (batch, N), e.g. the deterministic free state (a tensor or the free
        phase's result), starts every chain.
        """
        check_gibbs_model(network)
        betas = [nudge_strength(b, "each of betas") for b in betas]
        if any(b != 0 for b in betas) and y is None:
            raise ConfigError("nudged sampling (beta != 0) needs targets y")
        self.check_range(network, betas)
        x = network.clamped_input(x)
        batch = x.shape[0]
        tau = network.tau
        dt = self.dt if self.dt is not None else 0.1 * tau
        h = dt / tau
        T = float(self.temperature)
        beta = torch.tensor([float(b) for b in betas], dtype=network.dtype,
                            device=network.device)
        n_beta, chains, n = len(betas), self.chains, network.state_size
        # Every (beta, chain, sample) is one row of a flat (rows, N) state: plain 2-D matrix
        # products, much faster than broadcast batched ones on a few busy CPU cores.
        rows = n_beta * chains * batch
        if init is None:
            state = network.initial_state(rows)
        else:
            init = start_state(init, network, batch, leading=False, engine="the sampler")
            state = init.detach().to(network.dtype).expand(n_beta * chains, batch, n)
            state = state.reshape(rows, n).clone()
        drive = {k: v.repeat(n_beta * chains, 1) for k, v in network.drive(x).items()}
        x_rows = x.repeat(n_beta * chains, 1)
        # targets on the network's device, one-hot once (not at every step)
        y_rows = None if y is None else network.targets(y).repeat(n_beta * chains, 1)
        beta_rows = beta.repeat_interleave(chains * batch)
        bounds = _bounds(network)

        def drift(s: torch.Tensor) -> torch.Tensor:  # -∇U, with U = E + βC
            force = tau * network.velocity(s, drive)
            if y_rows is not None:
                force = force - beta_rows.unsqueeze(-1) * network.cost_gradient(s, y_rows)
            return force

        def potential(s: torch.Tensor) -> torch.Tensor:
            energy = network.energy(s, x_rows, drive=drive)  # W x computed once
            if y_rows is not None:
                energy = energy + beta_rows * network.cost(s, y_rows)
            return energy

        noise_scale = math.sqrt(2 * T * h)
        accepted = torch.zeros(len(betas), dtype=network.dtype, device=network.device)
        proposals = 0
        kept: list[torch.Tensor] = []
        total = int(self.burn_in) + int(self.samples) * int(self.thin)
        with torch.no_grad():
            force = drift(state)
            energy = potential(state) if self.metropolis else None
            for step in range(1, total + 1):
                # the same noise and uniforms for every nudge (common random numbers)
                noise = torch.randn(chains * batch, n, generator=self._generator,
                                    dtype=network.dtype).to(network.device).repeat(n_beta, 1)
                proposal = state + h * force + noise_scale * noise
                if not self.metropolis:
                    if bounds is not None:
                        proposal = torch.maximum(torch.minimum(proposal, bounds[1]), bounds[0])
                    state, force = proposal, drift(proposal)
                else:
                    new_force = drift(proposal)
                    new_energy = potential(proposal)
                    forward = ((proposal - state - h * force) ** 2).sum(-1)
                    backward = ((state - proposal - h * new_force) ** 2).sum(-1)
                    log_ratio = (-(new_energy - energy) / T
                                 - (backward - forward) / (4 * T * h))
                    if bounds is not None:
                        inside = ((proposal >= bounds[0]) & (proposal <= bounds[1])).all(-1)
                        log_ratio = torch.where(inside, log_ratio,
                                                torch.full_like(log_ratio, -math.inf))
                    uniform = torch.rand(chains * batch, generator=self._generator,
                                         dtype=network.dtype).to(network.device).repeat(n_beta)
                    accept = torch.log(uniform) < log_ratio
                    state = torch.where(accept.unsqueeze(-1), proposal, state)
                    force = torch.where(accept.unsqueeze(-1), new_force, force)
                    energy = torch.where(accept, new_energy, energy)
                    accepted += accept.to(network.dtype).reshape(n_beta, -1).mean(-1)
                    proposals += 1
                if not bool(torch.isfinite(state).all()):
                    raise ConfigError(
                        f"Langevin chains of {network.model.name!r} became NaN/inf after "
                        f"{step} steps at T = {T:g}; lower dt (now {dt:g} s) or the weight "
                        "gain (the energy may not be bounded below)")
                if step > self.burn_in and (step - self.burn_in) % self.thin == 0:
                    kept.append(state.reshape(n_beta, chains, batch, n).clone())
        acceptance = accepted / proposals if proposals else torch.ones_like(accepted)
        return GibbsSamples(states=torch.stack(kept, dim=1), betas=beta, acceptance=acceptance)


def check_gibbs_model(network: Network) -> None:
    """Gibbs sampling needs ``F = -(1/τ)∇E`` (a gradient model with ``Q = 1``)."""
    model = network.model
    if model.structural_class != "gradient":
        raise ConfigError(f"Langevin/Gibbs sampling needs a gradient model "
                          f"(F = -(1/tau) grad E); {model.name!r} is {model.structural_class}, "
                          "whose noisy dynamics have no Gibbs stationary distribution")
    if network.coupling != "symmetric":
        raise ConfigError(f"Langevin/Gibbs sampling needs symmetric coupling (got "
                          f"{network.coupling!r}): only then is F the gradient of an energy")
    if any(q != 1.0 for q in model.q_values().values()):
        raise ConfigError(f"model {model.name!r} has Q = {model.q_values()}; Gibbs sampling "
                          "here supports Q = 1 only")


def _bounds(network: Network) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not network.compiled.bounds:
        return None
    low = torch.full((network.state_size,), -math.inf, dtype=network.dtype)
    high = torch.full((network.state_size,), math.inf, dtype=network.dtype)
    for block in network.blocks:
        if block.variable in network.compiled.bounds:
            low[block.start:block.stop], high[block.start:block.stop] = \
                network.compiled.bounds[block.variable]
    return low.to(network.device), high.to(network.device)


__all__ = ["GibbsSamples", "LangevinSampler", "check_gibbs_model"]
