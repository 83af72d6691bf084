"""True-gradient oracles, peers of the rules: implicit differentiation, BPTT, finite
differences of the loss ``L(θ) = mean_b C(s*_b(θ))``."""

from __future__ import annotations

from dataclasses import replace

import torch

from neuroeq.checks import positive_number, whole_number
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.rules.base import Estimate, GradientEstimator
from neuroeq.rules.phases import (
    active_mask,
    combine,
    full_names,
    gradients,
    mean_cost,
    readout_gradients,
    velocity_vjp,
)

#: the finite-difference step by dtype: O(h²) against O(tol/h), with the relaxation's
#: tolerance about 1e-12 in float64 and 1e-5 in float32 (gradient_check_tolerance)
DEFAULT_STEPS = {torch.float64: 1e-5, torch.float32: 1e-2}


def default_step(dtype: torch.dtype, tol: float) -> float:
    """The finite-difference step for a relaxation tolerance ``tol``: ``DEFAULT_STEPS``
    for the dtype, or ``tol^(1/3)/10`` where that is larger (the two error terms, O(h²)
    and O(tol/h), balance near ``tol^(1/3)``): 1e-5 at float64's gradient-check
    tolerance 1e-12, 1e-3 at the model files' 1e-6."""
    return max(DEFAULT_STEPS.get(dtype, 1e-5), tol ** (1 / 3) / 10 if tol > 0 else 0.0)


def jacobian(network: Network, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobian ``J = ∂F/∂s`` at ``state``: shape ``(batch, N, N)``."""
    drive = network.drive(x)
    n = network.state_size
    state = state.detach()
    eye = torch.eye(n, dtype=state.dtype, device=state.device)

    def velocity(s: torch.Tensor) -> torch.Tensor:
        return network.velocity(s, drive)

    with torch.enable_grad():
        _, vjp = torch.func.vjp(velocity, state)
        # row k of J for every sample: e_kᵀ J = vjp(e_k)
        rows = [vjp(eye[k].expand_as(state))[0] for k in range(n)]
    return torch.stack(rows, dim=-2)


class ImplicitDifferentiation(GradientEstimator):
    """Implicit differentiation (adjoint solve). From ``F(s*(θ), θ) = 0``:
    ``dL/dθ = ∂C/∂θ - λᵀ ∂F/∂θ`` with ``Jᵀ λ = c`` at ``s*`` (one dense solve per sample,
    ``torch.linalg.solve``). Units pinned at a bound (projected dynamics) are held fixed:
    their Jacobian row is ``-1/τ`` and their ``∂F/∂θ`` zero. Exact.
    """

    name = "implicit"
    exact_for = "everything (the oracle)"
    takes_beta = False
    runs_on_brian2 = True

    def __init__(self, engine: TorchEngine | None = None):  # no nudged phase
        super().__init__(engine)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        state = free.state.detach()
        with torch.no_grad():
            velocity = network.velocity(state, network.drive(x))
        mask = active_mask(network, state, velocity)
        J = jacobian(network, state, x)
        eye = torch.eye(network.state_size, dtype=J.dtype, device=J.device)
        J = mask.unsqueeze(-1) * J + (1 - mask).unsqueeze(-1) * (-eye / network.tau)
        c = network.cost_gradient(state, y)
        adjoint = torch.linalg.solve(J.transpose(-1, -2), c.unsqueeze(-1)).squeeze(-1)
        grads = combine(velocity_vjp(network, state, x, adjoint * mask),
                        readout_gradients(network, state, y))
        return Estimate(grads, mean_cost(network, state, y), free)


class BPTT(GradientEstimator):
    """Backpropagation through time through the whole relaxation from the initial state:
    ``steps`` Euler steps with autograd (``steps=None``: twice the Euler steps that the
    relaxation from the initial state takes to settle, at least 200), then
    ``∇_θ mean C(s_T)``. Converges to the implicit gradient as the relaxation converges.
    """

    name = "bptt"
    exact_for = "everything, as the relaxation converges (the oracle)"
    takes_beta = False

    def __init__(self, engine: TorchEngine | None = None, steps: int | None = None):
        super().__init__(engine)
        self.steps = None if steps is None else whole_number(steps, "BPTT steps", 1)

    def check_engine(self, engine: object) -> None:
        """An engine that runs with autograd (``differentiable``), and the base checks."""
        if getattr(engine, "differentiable", True) is False:
            raise ConfigError(f"BPTT back-propagates through the relaxation, and the "
                              f"{getattr(engine, 'name', type(engine).__name__)} engine runs "
                              "without autograd: give BPTT a "
                              "TorchEngine")
        super().check_engine(engine)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        params = dict(network.named_parameters())
        # back-propagation through Euler's steps (the accelerated solvers run without
        # autograd, so the same settings with the Euler solver)
        engine = replace(self.engine, solver="euler") if self.engine.solver != "euler" \
            else self.engine
        steps = self.steps
        if steps is None:  # measured, not the free phase's count: an accelerated solver
            with torch.no_grad():  # counts its map evaluations, a warm start fewer steps
                steps = max(200, 2 * engine.relax(network, x).n_steps)
        with torch.enable_grad():
            run = engine.relax(network, x, max_steps=steps, tol=0.0)
            loss = network.cost(run.state, y).mean()
            grads = gradients(loss, list(params.values()))
        grads = {name: (g if g is not None else torch.zeros_like(params[name]))
                 for name, g in zip(params, grads, strict=False)}
        return Estimate(grads, float(loss.detach()), free, {"bptt": run})

class FiniteDifferences(GradientEstimator):
    """Central finite differences of the loss, element by element:
    ``∂L/∂θ_k ≈ (L(θ + h e_k) - L(θ - h e_k)) / 2h``, each perturbed network relaxed from
    the free state (all perturbations of one tensor relaxed together as a batch).
    Readout parameters are perturbed at fixed ``s*``. Error O(h²) + O(tol/h): ``h=None``
    takes :func:`default_step`, from the network's dtype and the engine's tolerance
    (float32's relaxations settle to about 1e-5, so a step of 1e-5 there would leave an
    O(1) error; the model files' tol of 1e-6 left 4e-3 with float64's 1e-5).
    """

    name = "fd"
    exact_for = "everything, up to O(h^2) (the oracle)"
    takes_beta = False
    dtype_bounded = ("h",)

    def __init__(self, engine: TorchEngine | None = None, h: float | None = None,
                 chunk: int = 512):
        super().__init__(engine)
        self.h = None if h is None else positive_number(h, "finite-difference step h")
        self.chunk = whole_number(chunk, "finite-difference chunk", 1)

    def _loss_of_stack(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                       free: RelaxResult, name: str, stacked: torch.Tensor) -> torch.Tensor:
        params = network.dynamics_parameters()
        if name.startswith("b"):
            stacked = stacked.unsqueeze(-2)  # (P, 1, n) broadcasts over the batch
        params = {**params, name: stacked}
        init = free.state.detach().expand(stacked.shape[0], *free.state.shape).clone()
        with torch.no_grad():
            run = self.engine.relax(network, x, params=params, init=init)
            return network.cost(run.state, y).mean(-1)

    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        names = full_names(network)
        h = self.h if self.h is not None else default_step(network.dtype,
                                                           self.engine.settings(network)[2])
        grads: dict[str, torch.Tensor] = {}
        for short, param in network.dynamics_parameters().items():
            flat = param.detach().reshape(-1)
            result = torch.empty_like(flat)
            for start in range(0, flat.numel(), self.chunk):
                idx = torch.arange(start, min(start + self.chunk, flat.numel()))
                base = flat.expand(2 * len(idx), -1).clone()
                rows = torch.arange(len(idx))
                base[rows, idx] += h
                base[rows + len(idx), idx] -= h
                losses = self._loss_of_stack(network, x, y, free, short,
                                             base.reshape(-1, *param.shape))
                result[idx] = (losses[:len(idx)] - losses[len(idx):]) / (2 * h)
            grads[names[short]] = result.reshape(param.shape)
        grads.update(self._readout(network, free.state, y, h))
        return Estimate(grads, mean_cost(network, free.state, y), free)

    def _readout(self, network: Network, state: torch.Tensor, y: torch.Tensor, h: float
                 ) -> dict[str, torch.Tensor]:
        grads = {}
        readout = network.readout
        rates = network.output_rates(state.detach())
        for name, param in readout.named_parameters():
            flat = param.detach().reshape(-1)
            result = torch.empty_like(flat)
            with torch.no_grad():
                for k in range(flat.numel()):
                    losses = []
                    for sign in (1, -1):
                        original = param.data.reshape(-1)[k].item()
                        param.data.reshape(-1)[k] = original + sign * h
                        losses.append(float(readout.cost(rates, y).mean()))
                        param.data.reshape(-1)[k] = original
                    result[k] = (losses[0] - losses[1]) / (2 * h)
            grads[f"readout.{name}"] = result.reshape(param.shape)
        return grads


__all__ = ["BPTT", "FiniteDifferences", "ImplicitDifferentiation", "jacobian"]
