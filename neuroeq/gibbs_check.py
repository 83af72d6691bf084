"""Exact check of finite-nudge and path-integral EP on a Gaussian (linear) network.

With ``ρ(s) = s`` (``models/linear.toml``) and the MSE cost through the identity readout,
``U_β(s) = E(s) + βC(s) = ½ sᵀP_β s - g_βᵀ s + c_β`` is quadratic, with
``P_β = P + βΠ`` (``Π`` selects the output units), ``g_β = g + βΠŷ``, ``c_β = β‖ŷ‖²/2``.
The Gibbs distribution is Gaussian and the free energy has the closed form

``A(θ, β) = c_β - ½ g_βᵀ P_β⁻¹ g_β + (T/2) log det P_β - (n T/2) log 2πT``

(per data sample; batch mean). Its gradient ``∇_θ (A(θ, β) - A(θ, 0))/β`` by autograd is
the reference for the Monte Carlo estimators (:func:`gibbs_check`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from neuroeq.engines.langevin import check_temperature
from neuroeq.errors import ConfigError
from neuroeq.io import software_attrs
from neuroeq.network import Network
from neuroeq.rules import RULES
from neuroeq.rules.phases import full_names

GIBBS_RULES = {name: rule for name, rule in RULES.items() if rule.samples_gibbs}


def free_energy(network: Network, x: torch.Tensor, y: torch.Tensor, beta: float,
                temperature: float, params: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
    """Exact ``A(θ, β)`` of a linear-model network (batch mean), differentiable in θ."""
    model = network.model
    if model.rho_code.strip() != model.coupled_variable or model.structural_class != "gradient":
        raise ConfigError(f"the closed-form free energy needs the linear model (rho(s) = s), "
                          f"got {model.name!r} with rho = {model.rho_code!r}")
    if network.readout.kind != "identity" or network.readout.cost_name != "mse":
        raise ConfigError("the closed-form free energy needs the identity readout with MSE")
    params = network.dynamics_parameters() if params is None else params
    n = network.state_size
    T = check_temperature(temperature)
    zero = torch.zeros(n, dtype=network.dtype, device=network.device)
    out = network.output_block
    selector = torch.zeros(n, dtype=network.dtype, device=network.device)
    selector[out.start:out.stop] = 1.0
    total = 0.0
    for b in range(x.shape[0]):
        xb = x[b:b + 1]

        def energy(s: torch.Tensor, xb: torch.Tensor = xb) -> torch.Tensor:
            return network.energy(s.unsqueeze(0), xb, params).sum()

        P = torch.func.hessian(energy)(zero)
        g = -torch.func.grad(energy)(zero)
        target = torch.zeros(n, dtype=network.dtype, device=network.device)
        target[out.start:out.stop] = network.readout.targets(y[b:b + 1], x)[0]
        P_beta = P + beta * torch.diag(selector)
        g_beta = g + beta * selector * target
        eigenvalues = torch.linalg.eigvalsh(P_beta.detach())
        if float(eigenvalues.min()) <= 0:
            raise ConfigError(f"the linear network's energy is not bounded below (smallest "
                              f"Hessian eigenvalue {float(eigenvalues.min()):.3g}); lower the "
                              "weight gain")
        mean = torch.linalg.solve(P_beta, g_beta)
        total = total + (0.5 * beta * (target ** 2).sum() - 0.5 * g_beta @ mean
                         + 0.5 * T * torch.logdet(P_beta) - 0.5 * n * T * math.log(2 * math.pi * T))
    return total / x.shape[0]


def exact_gradient(network: Network, x: torch.Tensor, y: torch.Tensor, beta: float,
                   temperature: float) -> dict[str, torch.Tensor]:
    """``∇_θ (A(θ, β) - A(θ, 0))/β`` by autograd through :func:`free_energy`."""
    params = {k: v.detach().clone().requires_grad_() for k, v in
              network.dynamics_parameters().items()}
    objective = (free_energy(network, x, y, beta, temperature, params)
                 - free_energy(network, x, y, 0.0, temperature, params)) / beta
    grads = torch.autograd.grad(objective, list(params.values()))
    names = full_names(network)
    return {names[k]: g for k, g in zip(params, grads, strict=True)}


#: limits of a check: Langevin chains (each a copy of the batch's state), and the units
#: beyond the input (a dense Hessian per sample)
MAX_CHAINS = 1_000_000
MAX_UNITS = 2_000


def gibbs_check(sizes: Sequence[int] = (3, 4, 2), temperatures: Sequence[float] = (0.05, 0.2),
                betas: Sequence[float] = (0.1, 1.0), chains: int = 2000,
                seeds: Sequence[int] = (0,),
                rules: Sequence[str] = tuple(GIBBS_RULES), batch: int = 2,
                gain: float = 0.5, progress: Callable[[str], None] | None = None,
                **sampler_options: Any) -> xr.Dataset:
    """Estimators against the exact gradient over temperature × β × seed × rule.

    Variables: ``rel_error`` (``‖ĝ - g‖/‖g‖``), ``cosine``, ``rel_stderr``
    (``‖SE‖/‖g‖``, the Monte Carlo error the estimator reports), ``z_rms`` (RMS over
    elements of ``(ĝ - g)/SE``: about 1 when the estimator is unbiased and its error bar
    honest) and ``acceptance`` (Metropolis).
    """
    for rule in rules:
        if rule not in GIBBS_RULES:
            raise ConfigError(f"unknown rule {rule!r}; known: {', '.join(GIBBS_RULES)}")
    if not 1 <= int(chains) <= MAX_CHAINS:
        raise ConfigError(f"chains {chains} must lie in [1, {MAX_CHAINS:,}]")
    if len(sizes) < 2 or sum(sizes[1:]) > MAX_UNITS:
        raise ConfigError(f"sizes {list(sizes)}: the exact free energy needs an input and an "
                          f"output layer and at most {MAX_UNITS:,} units beyond the input "
                          "(it inverts their dense Hessian)")
    for temperature in temperatures:  # before any sampling, not at the first point
        check_temperature(temperature)
    for beta in betas:
        if not (math.isfinite(float(beta)) and 0 < float(beta) <= 1):
            raise ConfigError(f"beta {beta} must lie in (0, 1] (the nudge of the Gibbs "
                              "objective)")
    shape = (len(temperatures), len(betas), len(seeds), len(rules))
    data = {k: np.full(shape, np.nan) for k in
            ("rel_error", "cosine", "rel_stderr", "z_rms", "acceptance")}
    for s, seed in enumerate(seeds):
        network = Network("linear", sizes, coupling="symmetric", seed=seed, gain=gain)
        generator = torch.Generator().manual_seed(20_000 + seed)
        x = torch.rand(batch, sizes[0], generator=generator, dtype=network.dtype)
        y = torch.randint(0, sizes[-1], (batch,), generator=generator)
        names = sorted(n for n, _ in network.named_parameters())
        for i, temperature in enumerate(temperatures):
            for j, beta in enumerate(betas):
                exact = exact_gradient(network, x, y, beta, temperature)
                reference = torch.cat([exact[n].reshape(-1) for n in names])
                for r, rule_name in enumerate(rules):
                    if progress:
                        progress(f"seed={seed} T={temperature:g} beta={beta:g} {rule_name}")
                    rule = GIBBS_RULES[rule_name](beta, temperature=temperature, chains=chains,
                                                  seed=seed, **sampler_options)
                    found = rule.estimate(network, (x, y), write_grad=False)
                    estimate = found.flat(names)
                    stderr = torch.cat([found.stderr[n].reshape(-1) for n in names])
                    error = estimate - reference
                    norm = float(reference.norm())
                    data["rel_error"][i, j, s, r] = float(error.norm()) / norm
                    data["cosine"][i, j, s, r] = float(estimate @ reference
                                                       / (estimate.norm() * norm))
                    data["rel_stderr"][i, j, s, r] = float(stderr.norm()) / norm
                    data["z_rms"][i, j, s, r] = float(((error / stderr) ** 2).mean().sqrt())
                    data["acceptance"][i, j, s, r] = float(found.acceptance.mean())
    dims = ("temperature", "beta", "seed", "rule")

    config = {"sizes": list(sizes), "temperatures": list(temperatures), "betas": list(betas),
              "chains": chains, "seeds": list(seeds), "batch": batch, "gain": gain,
              "model": "linear", **sampler_options}
    return xr.Dataset({k: (dims, v) for k, v in data.items()},
                      coords={"temperature": list(temperatures), "beta": list(betas),
                              "seed": list(seeds), "rule": list(rules)},
                      attrs={"title": "neuroeq Gibbs gradient check",
                             "reference": "closed-form free energy of the Gaussian network",
                             "config": json.dumps(config), **software_attrs()})


def gibbs_table(dataset: xr.Dataset) -> str:
    """Markdown table, one row per rule × temperature × β (mean over seeds)."""
    lines = ["| rule | T | β | rel. error | reported rel. std. error | z (RMS) | cosine | "
             "acceptance |", "|---|---|---|---|---|---|---|---|"]
    for rule in dataset.rule.values:
        for temperature in dataset.temperature.values:
            for beta in dataset.beta.values:
                point = dataset.sel(rule=rule, temperature=temperature, beta=beta).mean("seed")
                lines.append(f"| {rule} | {temperature:g} | {beta:g} | "
                             f"{float(point.rel_error):.2e} | {float(point.rel_stderr):.2e} | "
                             f"{float(point.z_rms):.2f} | {float(point.cosine):.6f} | "
                             f"{float(point.acceptance):.3f} |")
    return "\n".join(lines) + "\n"


__all__ = ["GIBBS_RULES", "exact_gradient", "free_energy", "gibbs_check", "gibbs_table"]
