"""Stochastic EP for probabilistic spiking networks (Lin, Jiang, Sengupta 2025,
arXiv 2511.11320)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.ep import check_beta
from neuroeq.rules.phases import (
    combine,
    difference,
    full_names,
    gradients,
    hebbian_difference,
    mean_cost,
    readout_gradients,
)

if TYPE_CHECKING:
    from neuroeq.engines.brian2_spiking import SpikingEngine, SpikingPhase
    from neuroeq.engines.torch_engine import RelaxResult, TorchEngine


def statistics_gradient(network: Network, phase: SpikingPhase, x: torch.Tensor,
                        snapshot: int = -1, replicas: int | None = None) -> dict[str, torch.Tensor]:
    """``∂E/∂θ`` from spiking phase statistics, batch-averaged:

    ``∂E/∂W = -⟨spk_post spk_preᵀ⟩`` (time-, replica- and batch-averaged coincidences; the
    clamped input's rate is ``x``), ``∂E/∂b = -⟨spk⟩``; the same contraction as
    :meth:`Network.hebbian_energy` with products of rates replaced by coincidences.
    ``snapshot`` picks the window, ``replicas`` the first ``R`` replicas (default all).
    """
    params = network.dynamics_parameters()
    x = x.to(network.dtype)

    def mean(value: torch.Tensor) -> torch.Tensor:  # (S, R, B, ...) → (...)
        return value[snapshot][:replicas].mean(0).mean(0).to(network.dtype)

    rates = {l: value[snapshot][:replicas].mean(0).to(network.dtype)  # (B, n)
             for l, value in phase.rates.items()}
    with torch.enable_grad():
        energy = 0.0
        for edge in network.edges:
            if not edge.primary:
                continue
            matrix = network.matrix(edge, params)
            if edge.pre == 0:
                coincidence = (rates[edge.post].unsqueeze(-1) * x.unsqueeze(-2)).mean(0)
            elif edge.param in phase.coincidences:
                coincidence = mean(phase.coincidences[edge.param])
            else:
                raise ConfigError(f"the spiking phase has no statistics for edge {edge.param!r}")
            factor = 0.5 if (edge.kind == "lateral" and network.coupling == "symmetric") else 1.0
            energy = energy - factor * (matrix * coincidence).sum()
        for l in range(1, network.n_layers + 1):
            energy = energy - (params[f"b{l}"] * rates[l].mean(0)).sum()
        grads = gradients(energy, list(params.values()))
    names = full_names(network)
    return {names[k]: (g if g is not None else torch.zeros_like(params[k]))
            for k, g in zip(params, grads, strict=False)}


def mean_field_limit(network: Network, x: torch.Tensor, y: torch.Tensor, beta: float,
                     engine: TorchEngine, free: RelaxResult, centered: bool = True
                     ) -> dict[str, torch.Tensor]:
    """What :class:`StochasticEP` estimates as ``window · replicas → ∞`` and ``τ/dt → ∞``:
    the same contrast on the rate network's fixed points under the same *constant* nudge
    ``-(±β/τ) g(s*)``, ``g`` evaluated at the free state ``s*``
    (:meth:`SpikingEngine.nudge_gradient`):

    ``(1/2β)(∂E/∂θ(s₊) - ∂E/∂θ(s₋))`` (centered; one-sided: ``1/β``, ``s*`` for ``s₋``).

    Dynamics parameters only, batch-averaged. ``engine`` a :class:`TorchEngine`, ``free``
    its free phase of ``x``. Within the linear range of a piecewise-linear ``ρ`` the fixed
    point is linear in the constant current, so the centered form is the true gradient for
    any ``β`` there; the state-dependent nudge of :class:`CenteredEP` differs from it by
    O(β²) (1.5 % at β = 0.1 on a 6-8-3 ``spiking_rate`` network).
    """
    from neuroeq.engines.brian2_spiking import SpikingEngine

    block = network.output_block
    teaching = torch.zeros_like(free.state)
    teaching[:, block.start:block.stop] = SpikingEngine.nudge_gradient(
        network, free.state, network.targets(y))

    def nudged(sign: float) -> torch.Tensor:
        current = -(sign * beta / network.tau) * teaching
        with torch.no_grad():
            return engine.relax(network, x, init=free.state, force=lambda s: current).state

    if centered:
        return hebbian_difference(network, nudged(1.0), nudged(-1.0), x, 0.5 / beta)
    return hebbian_difference(network, nudged(1.0), free.state, x, 1.0 / beta)


class StochasticEP(GradientEstimator):
    """Stochastic EP: EP on the time-averaged statistics of a Bernoulli spiking network.

    ``ĝ_W = -(1/β)(⟨spk_post spk_preᵀ⟩_β - ⟨spk_post spk_preᵀ⟩_0)`` and
    ``ĝ_b = -(1/β)(⟨spk⟩_β - ⟨spk⟩_0)`` (``centered``: phases ``±β`` and ``1/2β``), with
    statistics averaged over the engine's window and replicas. The nudge is the constant
    current ``-(β/τ) g`` at the free phase's mean membrane (``g = ∂C/∂r`` for a model whose
    ``[spiking] nudge`` is ``rate_error``, ``∂C/∂u`` otherwise); the nudged phases reuse the free
    phase's start and seed (common random numbers). In the mean-field limit (long windows,
    ``τ/dt`` large) it is the same contrast on the rate network under the same constant
    nudge (:func:`mean_field_limit`; exact for the centered form within the linear range of
    a piecewise-linear ``ρ``), and its variance falls as ``1/(window · replicas)``.

    ``engine`` is a :class:`~neuroeq.engines.brian2_spiking.SpikingEngine`.
    """

    name = "stoch_ep"
    exact_for = ("the same contrast on the rate network under the same constant nudge "
                 "(mean_field_limit), as window x replicas -> infinity")
    uses_spike_statistics = True
    #: its mean-field limit is EP's contrast, the gradient only with symmetric coupling
    exact_couplings = ("symmetric",)

    def __init__(self, beta: float = 0.2, engine: SpikingEngine | None = None,
                 centered: bool = True):
        if engine is None:
            from neuroeq.engines.brian2_spiking import SpikingEngine

            engine = SpikingEngine()
        super().__init__(engine, None)
        self.beta = check_beta(beta)
        self.centered = centered

    def phases(self, network: Network, x: torch.Tensor, y: torch.Tensor,
               free: SpikingPhase) -> dict:
        """The nudged phases (``"+beta"`` and, when centered, ``"-beta"``)."""
        common = {"y": y, "init": free.start, "seed": free.seed, "nudge_at": free.state}
        phases = {"+beta": self.engine.relax(network, x, beta=self.beta, **common)}
        if self.centered:
            phases["-beta"] = self.engine.relax(network, x, beta=-self.beta, **common)
        return phases

    def combine_phases(self, network: Network, x: torch.Tensor, free: SpikingPhase,
                       phases: dict, snapshot: int = -1, replicas: int | None = None
                       ) -> dict[str, torch.Tensor]:
        """The dynamics-parameter estimate from given phases (any window / replicas)."""
        plus = statistics_gradient(network, phases["+beta"], x, snapshot, replicas)
        if self.centered:
            minus = statistics_gradient(network, phases["-beta"], x, snapshot, replicas)
            return difference(plus, minus, 0.5 / self.beta)
        base = statistics_gradient(network, free, x, snapshot, replicas)
        return difference(plus, base, 1.0 / self.beta)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: SpikingPhase | RelaxResult) -> Estimate:
        if not hasattr(free, "coincidences"):
            raise ConfigError("stochastic EP needs a spiking free phase (SpikingEngine.relax); "
                              f"got {type(free).__name__}")
        phases = self.phases(network, x, y, free)
        grads = combine(self.combine_phases(network, x, free, phases),
                        readout_gradients(network, free.state, y))
        return Estimate(grads, mean_cost(network, free.state, y), free, phases)

    def random_state(self) -> dict[str, torch.Tensor]:
        return {"spiking_calls": torch.tensor(self.engine.calls)}

    def set_random_state(self, state: dict[str, torch.Tensor]) -> None:
        if "spiking_calls" in state:
            self.engine.calls = int(state["spiking_calls"])
