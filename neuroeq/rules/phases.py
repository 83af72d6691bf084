"""Pieces the rules share: free/nudged phases, Hebbian and vector-field contractions.

Every function returns gradients keyed by full parameter names
(``weights.W1``, ``biases.b1``, ``readout.weight``) and averaged over the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.network import Network

if TYPE_CHECKING:
    from neuroeq.engines.torch_engine import Force


def full_names(network: Network) -> dict[str, str]:
    """Short dynamics-parameter names → ``named_parameters`` names."""
    names = {f"weights.{k}": k for k in network.weights} | {f"biases.{k}": k
                                                            for k in network.biases}
    return {short: full for full, short in names.items()}


def gradients(output: torch.Tensor, tensors: list[torch.Tensor]
              ) -> list[torch.Tensor | None]:
    """``∂ output/∂t`` for each tensor ``t`` that requires grad (``torch.autograd.grad``),
    ``None`` for the others and for those ``output`` does not depend on: a frozen parameter
    (``requires_grad=False``) is not differentiated, and the estimators leave its
    ``.grad`` alone."""
    wanted = [t for t in tensors if t.requires_grad]
    if not wanted or not output.requires_grad:
        return [None] * len(tensors)
    found = iter(torch.autograd.grad(output, wanted, allow_unused=True))
    return [next(found) if t.requires_grad else None for t in tensors]


def readout_gradients(network: Network, state: torch.Tensor, y: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
    """``∂C/∂θ_readout`` at the free state (the readout does not feed back: exact)."""
    params = dict(network.readout.named_parameters())
    if not params:
        return {}
    with torch.enable_grad():
        loss = network.cost(state.detach(), y).mean()
        grads = gradients(loss, list(params.values()))
    return {f"readout.{name}": g for name, g in zip(params, grads, strict=True) if g is not None}


def mean_cost(network: Network, state: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(network.cost(state, y).mean())


def hebbian_gradient(network: Network, state: torch.Tensor, x: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """``∂E_hebb/∂θ`` at ``state``, batch-averaged (``∂/∂W_l = -⟨ρ_l ρ_{l-1}ᵀ⟩``)."""
    params = network.dynamics_parameters()
    with torch.enable_grad():
        energy = network.hebbian_energy(state.detach(), x).mean()
        grads = gradients(energy, list(params.values()))
    names = full_names(network)
    return {names[k]: (g if g is not None else torch.zeros_like(params[k]))
            for k, g in zip(params, grads, strict=False)}


def hebbian_difference(network: Network, state_a: torch.Tensor, state_b: torch.Tensor,
                       x: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    """``scale · (∂E_hebb/∂θ(s_a) - ∂E_hebb/∂θ(s_b))``, batch-averaged, in closed form.

    For an edge ``M`` (``pre → post``): ``∂E/∂M = -⟨ρ_post ρ_preᵀ⟩``, so the difference is
    ``-(⟨ρ_post^a ρ_pre^aᵀ⟩ - ⟨ρ_post^b ρ_pre^bᵀ⟩)``; from the clamped input (``ρ_pre = x``
    in both phases) one matmul, ``-⟨(ρ_post^a - ρ_post^b) xᵀ⟩``. Biases:
    ``-⟨ρ_l^a - ρ_l^b⟩``. The map from parameters to the edge matrix (transpose,
    symmetrised lateral weights) is linear and applied by its vector-Jacobian product.
    Equal to ``difference(hebbian_gradient(a), hebbian_gradient(b), scale)``.
    """
    params = network.dynamics_parameters()
    names = full_names(network)
    n_units = state_a.shape[-1]
    state_a = state_a.detach().reshape(-1, n_units)
    state_b = state_b.detach().reshape(-1, n_units)
    count = state_a.shape[0]
    x = x.detach().to(network.dtype).reshape(-1, network.sizes[0])
    x = x.expand(count // x.shape[0], *x.shape).reshape(count, -1) if x.shape[0] != count else x
    channels = [network.rates] + [
        (lambda s, name=name: network.channel_rates(s, name))
        for name in network.compiled.channels]
    rates_a = [rates(state_a) for rates in channels]
    rates_b = [rates(state_b) for rates in channels]
    grads: dict[str, torch.Tensor] = {}
    differences: dict[int, torch.Tensor] = {}  # ρ_l^a - ρ_l^b: the input edges' and the biases'

    def difference_of(layer: int) -> torch.Tensor:
        if layer not in differences:
            differences[layer] = rates_a[0][layer] - rates_b[0][layer]
        return differences[layer]

    with torch.no_grad():
        for edge in network.edges:
            if not edge.primary:
                continue
            factor = 0.5 if (edge.kind == "lateral" and network.coupling == "symmetric") else 1.0
            coefficient = -factor * scale / count
            if edge.pre == 0:  # the clamped input feeds the primary channel only
                post = difference_of(edge.post).transpose(-1, -2)  # (the scale as alpha)
                product = torch.addmm(post.new_empty(post.shape[0], x.shape[1]), post, x,
                                      beta=0, alpha=coefficient)
            else:  # Σ_channels (ρ_post^a ρ_pre^aᵀ - ρ_post^b ρ_pre^bᵀ), accumulated in place
                # (the scale as the matmuls' alpha; stacking the phases for one matmul cost
                # a copy and a negation of the wide factors: ΔW₂ of 784-500-10 took 1.5x)
                product = None
                for phase_rates, sign in ((rates_a, 1.0), (rates_b, -1.0)):
                    for r in phase_rates:
                        post, pre = r[edge.post].transpose(-1, -2), r[edge.pre]
                        if product is None:  # beta = 0: the empty input is never read
                            product = torch.addmm(post.new_empty(post.shape[0], pre.shape[1]),
                                                  post, pre, beta=0, alpha=sign * coefficient)
                        else:
                            product.addmm_(post, pre, alpha=sign * coefficient)
            name = names[edge.param]
            grad = network.matrix_vjp(edge, product, params)
            grads[name] = grad if name not in grads else grads[name] + grad
        for l in range(1, network.n_layers + 1):
            grads[names[f"b{l}"]] = difference_of(l).mean(0).mul_(-scale)
        for short, value in params.items():  # parameters no edge reads (none in layered nets)
            if names[short] not in grads:  # (not setdefault: it would build every zeros_like)
                grads[names[short]] = torch.zeros_like(value)
    return grads


def velocity_vjp(network: Network, state: torch.Tensor, x: torch.Tensor,
                 vector: torch.Tensor, drive: dict[int, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """``-vᵀ ∂F/∂θ`` at ``state``, batch-averaged: the adjoint form ``-λᵀ ∂F/∂θ``.

    ``drive``: the input currents ``Σ W x`` of ``x`` at the current parameters (a phase's
    ``RelaxResult.drive``). They then enter as leaves, and the input edges' part is the
    closed form ``∂/∂M = g_Iᵀ x`` with ``g_I`` the cotangent of the current: the same
    matmul autograd's backward runs, without recomputing ``W x`` forward.
    """
    params = network.dynamics_parameters()
    names = full_names(network)
    keys = list(params)
    x = x.detach().to(network.dtype)
    batched = drive is not None and state.dim() == 2 and x.dim() == 2 and all(
        d.shape[:-1] == state.shape[:-1] for d in drive.values())
    with torch.enable_grad():
        leaves = ({layer: d.detach().requires_grad_() for layer, d in drive.items()}
                  if batched else {})
        velocity = network.velocity(state.detach(), leaves if batched else network.drive(x),
                                    params)
        total = -(velocity * vector.detach()).sum() / state.shape[-2]
        grads = gradients(total, [params[k] for k in keys] + list(leaves.values()))
    found = dict(zip(keys, grads[:len(keys)], strict=True))
    currents = dict(zip(leaves, grads[len(keys):], strict=True))
    for edge in network.edges if batched else ():
        cotangent = currents.get(edge.post)
        if edge.pre != 0 or cotangent is None:
            continue
        grad = network.matrix_vjp(edge, cotangent.transpose(-1, -2) @ x, params)
        found[edge.param] = grad if found[edge.param] is None else found[edge.param] + grad
    return {names[k]: (g if g is not None else torch.zeros_like(params[k]))
            for k, g in found.items()}


def combine(*parts: dict[str, torch.Tensor], scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Sum gradient dictionaries (later ones may add keys)."""
    total: dict[str, torch.Tensor] = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total[name] + value if name in total else value
    return {k: v * scale for k, v in total.items()} if scale != 1.0 else total


def difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], scale: float
               ) -> dict[str, torch.Tensor]:
    """``scale · (a - b)`` key by key."""
    return {k: (a[k] - b[k]) * scale for k in a}


def nudged_phase(engine: TorchEngine, network: Network, x: torch.Tensor, y: torch.Tensor,
                 beta: float, free: RelaxResult, force: Force | None = None,
                 max_steps: int | None = None
                 ) -> RelaxResult:
    """Relax with nudge ``β`` from the free phase's state (a warm start), reusing its input
    currents ``Σ W x`` and its map's constant parts: no autograd. ``max_steps`` overrides
    the engine's budget (e.g. 20 free / 4 nudged steps)."""
    with torch.no_grad():
        return engine.relax(network, x, y=y, beta=beta, start=free, force=force,
                            max_steps=max_steps)


def active_mask(network: Network, state: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """1 for units free to move, 0 for bounded units pinned at a bound by ``F``.

    With projected dynamics a pinned unit does not respond to small parameter changes;
    the oracles treat its row of the Jacobian as ``-1/τ`` and its ``∂F/∂θ`` as zero.
    """
    mask = torch.ones_like(state)
    for block in network.blocks:
        if block.variable not in network.compiled.bounds:
            continue
        low, high = network.compiled.bounds[block.variable]
        s = state[..., block.start:block.stop]
        f = velocity[..., block.start:block.stop]
        pinned = ((s <= low) & (f <= 0)) | ((s >= high) & (f >= 0))
        mask[..., block.start:block.stop] = (~pinned).to(state.dtype)
    return mask
