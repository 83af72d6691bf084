"""Gradient check: every rule against the true gradient, as an ``xarray.Dataset``.

Loops over model × coupling × α × seed × rule × β on small networks; the reference is
implicit differentiation (:class:`~neuroeq.rules.ImplicitDifferentiation`). Variables:
``cosine`` and ``rel_error`` (``‖ĝ - g‖/‖g‖``), the flattened ``estimate`` and ``true``
gradients (NaN-padded along ``element``, whose ``parameter`` coordinate names the
parameter of each element), ``free_steps`` and ``loss``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import did_you_mean
from neuroeq.engines.settings import DTYPES, gradient_check_tolerance
from neuroeq.engines.torch_engine import TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.io import software_attrs
from neuroeq.network import COUPLINGS, DEFAULT_ALPHA, Network
from neuroeq.neuron_model import NeuronModel, load_model
from neuroeq.readout import Readout
from neuroeq.rules import ORACLES, RULE_NAMES, RULES, make_rule

#: the rules a gradient check compares when none are named (CLI and protocol alike)
DEFAULT_RULES = ("ep", "centered", "vf", "asym", "dyadic")
#: limits of a gradient check (implicit differentiation builds a (units × units) Jacobian
#: per sample): the samples of a batch, and the units beyond the input
MAX_BATCH = 10_000
MAX_UNITS = 4_096
#: rules whose estimate has another reference than the deterministic gradient checked here
CHECKED_ELSEWHERE = {
    **{name: "it estimates the gradient of a noisy network's Gibbs objective, not of the "
             "stationary state's cost; check it with `neuroeq gibbscheck`"
       for name, rule in RULES.items() if rule.samples_gibbs},
    **{name: "it needs the spiking engine; compare it with mean-field EP in a 'stochastic' "
             "protocol (protocols/stochastic_vs_meanfield.toml)"
       for name, rule in RULES.items() if rule.uses_spike_statistics},
}


def _check_choices(values: Sequence[str], allowed: Sequence[str], what: str) -> None:
    for value in values:
        if value not in allowed:
            raise ConfigError(f"unknown {what} {value!r}{did_you_mean(value, allowed)}; "
                              f"known: {', '.join(allowed)}")


def check_alphas(couplings: Sequence[str], alphas: Sequence[float], where: str = "alphas"
                 ) -> None:
    """Refuse asymmetries ``alphas`` other than the default ``[1.0]`` for a check without
    asymmetric coupling: no network would read them (``where`` names them in the error)."""
    if "asymmetric" not in couplings and [float(a) for a in alphas] != [DEFAULT_ALPHA]:
        raise ConfigError(f"{where} {list(alphas)} set the asymmetry of asymmetric networks, "
                          f"and couplings {', '.join(couplings)} have none: add asymmetric to "
                          "the couplings, or leave the alphas out")


def gradcheck(models: Sequence[str | NeuronModel] = ("hopfield_smooth",),
              sizes: Sequence[int] = (20, 16, 5),
              couplings: Sequence[str] = ("symmetric",), alphas: Sequence[float] = (1.0,),
              rules: Sequence[str] = DEFAULT_RULES,
              betas: Sequence[float] = (1e-3,), seeds: Sequence[int] = (0,), batch: int = 4,
              dtype: str = "float64", engine: TorchEngine | None = None,
              readout: str = "identity", cost: str = "mse", gain: float = 1.0,
              progress: Callable[[str], None] | None = None) -> xr.Dataset:
    """Compare rules with the implicit-differentiation gradient; see the module docstring.

    ``models``: names or paths of model files, or loaded models (with their parameter
    overrides; the ``model`` coordinate holds their names)."""
    _check_choices(list(rules), RULE_NAMES, "rule")
    for rule in rules:
        if rule in CHECKED_ELSEWHERE:
            raise ConfigError(f"rule {rule!r} is not checked against the deterministic "
                              f"gradient: {CHECKED_ELSEWHERE[rule]}")
    _check_choices(list(couplings), COUPLINGS, "coupling")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    for beta in betas:
        if not math.isfinite(beta) or beta == 0:
            raise ConfigError(f"beta {beta} must be a finite, non-zero number")
    for alpha in alphas:
        if not 0 <= alpha <= 1:
            raise ConfigError(f"alpha {alpha} must lie in [0, 1]")
    check_alphas(couplings, alphas)
    if not 1 <= batch <= MAX_BATCH:
        raise ConfigError(f"batch {batch} must lie in [1, {MAX_BATCH:,}]")
    if len(sizes) < 2 or sum(sizes[1:]) > MAX_UNITS:
        raise ConfigError(f"sizes {list(sizes)}: a gradient check needs an input and an output "
                          f"layer and at most {MAX_UNITS:,} units beyond the input (the oracle "
                          "solves with the dense Jacobian of the state)")
    loaded = [model if isinstance(model, NeuronModel) else load_model(model)
              for model in models]
    models = [model.name if isinstance(model, NeuronModel) else str(model) for model in models]
    engine = engine or TorchEngine(tol=gradient_check_tolerance(dtype), max_steps=100000)
    torch_dtype = DTYPES[dtype]
    shape = (len(models), len(couplings), len(alphas), len(seeds), len(rules), len(betas))
    cosine = np.full(shape, np.nan)
    rel_error = np.full(shape, np.nan)
    free_steps = np.full(shape[:4], np.nan)
    loss = np.full(shape[:4], np.nan)
    # (estimate, true gradient, the (name, size) of each parameter in their order)
    vectors: dict[tuple, tuple[np.ndarray, np.ndarray, tuple[tuple[str, int], ...]]] = {}
    # the union of the networks' parameters, in order of first appearance: one element axis
    # for nets with different parameters (an asymmetric net's feedback matrices BW_l)
    layout: dict[tuple[str, int], None] = {}
    for i, (model_name, model) in enumerate(zip(models, loaded, strict=True)):
        for j, coupling in enumerate(couplings):
            for k, alpha in enumerate(alphas):
                if coupling != "asymmetric" and k > 0:  # alpha only shapes asymmetric nets
                    cosine[i, j, k], rel_error[i, j, k] = cosine[i, j, 0], rel_error[i, j, 0]
                    free_steps[i, j, k], loss[i, j, k] = free_steps[i, j, 0], loss[i, j, 0]
                    for key in [key for key in vectors if key[:3] == (i, j, 0)]:
                        vectors[(i, j, k, *key[3:])] = vectors[key]
                    continue
                # alpha shapes asymmetric nets only (the others refuse one)
                asymmetric = alpha if coupling == "asymmetric" else None
                label = f"{model_name} {coupling}" + (f" alpha={alpha}" if asymmetric is not None
                                                      else "")
                for s, seed in enumerate(seeds):
                    if progress:
                        progress(f"{label} seed={seed}")
                    network = Network(model, sizes, coupling=coupling, alpha=asymmetric,
                                      seed=seed, gain=gain, dtype=torch_dtype,
                                      readout=Readout(sizes[-1], 10 if readout == "linear"
                                                      else None, kind=readout, cost=cost,
                                                      seed=seed, dtype=torch_dtype))
                    generator = torch.Generator().manual_seed(10_000 + seed)
                    x = torch.rand(batch, sizes[0], generator=generator, dtype=torch_dtype)
                    y = torch.randint(0, network.readout.n_classes, (batch,),
                                      generator=generator)
                    # each parameter's (name, size), in the order its estimate is flattened
                    parts = tuple((n, p.numel()) for n, p in network.named_parameters())
                    names = [n for n, _ in parts]
                    with torch.no_grad():
                        free = engine.relax(network, x)
                    true = make_rule("implicit", engine=engine).estimate(
                        network, (x, y), free=free, write_grad=False)
                    reference = true.flat(names)
                    free_steps[i, j, k, s] = free.n_steps
                    loss[i, j, k, s] = true.loss
                    layout.update(dict.fromkeys(parts))
                    for r, rule_name in enumerate(rules):
                        for b, beta in enumerate(betas):
                            if rule_name in ORACLES and b > 0:
                                cosine[i, j, k, s, r, b] = cosine[i, j, k, s, r, 0]
                                rel_error[i, j, k, s, r, b] = rel_error[i, j, k, s, r, 0]
                                vectors[(i, j, k, s, r, b)] = vectors[(i, j, k, s, r, 0)]
                                continue
                            rule = make_rule(rule_name, beta=beta, engine=engine,
                                             model_class=model.structural_class)
                            found = rule.estimate(network, (x, y), free=free,
                                                  write_grad=False).flat(names)
                            # compared in float64 (a float32 cosine can print above 1)
                            found, reference = found.double(), reference.double()
                            cosine[i, j, k, s, r, b] = _cosine(found, reference)
                            rel_error[i, j, k, s, r, b] = float(
                                (found - reference).norm() / reference.norm())
                            vectors[(i, j, k, s, r, b)] = (found.cpu().numpy(),
                                                           reference.cpu().numpy(), parts)
    offsets, n_elements = {}, 0
    for part in layout:
        offsets[part], n_elements = n_elements, n_elements + part[1]
    parameter_names = [name for name, size in layout for _ in range(size)]
    estimate = np.full((*shape, n_elements), np.nan)  # NaN where a net lacks a parameter
    true_grad = np.full((*shape, n_elements), np.nan)
    for key, (found, reference, parts) in vectors.items():
        start = 0
        for part in parts:
            where = slice(offsets[part], offsets[part] + part[1])
            estimate[key][where] = found[start:start + part[1]]
            true_grad[key][where] = reference[start:start + part[1]]
            start += part[1]
    dims = ("model", "coupling", "alpha", "seed", "rule", "beta")
    coords = {"model": list(models), "coupling": list(couplings), "alpha": list(alphas),
              "seed": list(seeds), "rule": list(rules), "beta": list(betas),
              "parameter": ("element", parameter_names)}
    config = {"models": list(models), "sizes": list(sizes), "couplings": list(couplings),
              "alphas": list(alphas), "rules": list(rules), "betas": list(betas),
              "seeds": list(seeds), "batch": batch, "dtype": dtype, "readout": readout,
              "cost": cost, "gain": gain, "engine": engine.name,
              "tol": engine.settings(Network(loaded[0], sizes))[2]}

    return xr.Dataset(
        {"cosine": (dims, cosine), "rel_error": (dims, rel_error),
         "estimate": ((*dims, "element"), estimate), "true": ((*dims, "element"), true_grad),
         "free_steps": (dims[:4], free_steps), "loss": (dims[:4], loss)},
        coords=coords,
        attrs={"title": "neuroeq gradient check", "reference": "implicit differentiation",
               "model": ",".join(models), "config": json.dumps(config),
               **software_attrs()},
    )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()))


def summary_table(dataset: xr.Dataset) -> str:
    """Markdown table: mean cosine and relative error per rule × coupling × β (per model)."""
    lines = ["| model | coupling | α | rule | β | cosine (mean over seeds) | rel. error |",
             "|---|---|---|---|---|---|---|"]
    for model in dataset.model.values:
        for coupling in dataset.coupling.values:
            alphas = dataset.alpha.values if coupling == "asymmetric" else dataset.alpha.values[:1]
            for alpha in alphas:
                for rule in dataset.rule.values:
                    betas = dataset.beta.values[:1] if rule in ORACLES else dataset.beta.values
                    for beta in betas:
                        point = dataset.sel(model=model, coupling=coupling, alpha=alpha,
                                            rule=rule, beta=beta)
                        beta_text = "-" if rule in ORACLES else f"{beta:g}"
                        lines.append(
                            f"| {model} | {coupling} | {alpha:g} | {rule} | {beta_text} | "
                            f"{float(point.cosine.mean()):.8f} | "
                            f"{float(point.rel_error.mean()):.2e} |")
    return "\n".join(lines) + "\n"


def convergence_slope(dataset: xr.Dataset, rule: str, **selection: Any) -> float:
    """Slope of log(rel_error) against log(β) (1 for one-sided EP, 2 for centered)."""
    errors = dataset.rel_error.sel(rule=rule, **selection)
    errors = errors.mean([d for d in errors.dims if d != "beta"])
    betas = np.log(np.asarray(dataset.beta.values, dtype=float))
    return float(np.polyfit(betas, np.log(errors.values), 1)[0])
