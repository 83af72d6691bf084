"""Stochastic EP on the spiking Brian2 engine versus EP on the torch mean-field engine.

:func:`stochastic_vs_mean_field` runs the same network and batch through both and measures
the stochastic estimate ``ĝ`` against its mean-field limit ``g`` (the same contrast on the
rate network under the same constant nudge, same ``β`` and one-sided/centered form:
:func:`~neuroeq.rules.stochastic_ep.mean_field_limit`), as a function of the averaging
window ``T`` (steps) and the
population size ``R`` (replicas per sample), over independent seeds:

- ``cosine(ĝ, g)`` and ``rel_error = ‖ĝ - g‖/‖g‖`` per seed;
- ``bias = ‖E_seed[ĝ] - g‖/‖g‖``, ``variance = E_seed‖ĝ - E_seed[ĝ]‖²/‖g‖²`` and
  ``rmse = √E_seed[rel_error²]`` (so ``rmse² = bias² + variance``);
- the mean over ``n`` seeds still holds noise: ``E‖mean - g‖² = ‖b‖² + tr Σ/n``. So
  ``noise_floor = √(tr Σ̂/n)/‖g‖`` (``Σ̂`` the unbiased covariance over seeds: the bias
  that noise alone would show) and ``bias_beyond_noise = √max(0, bias² - noise_floor²)``
  (the estimated bias of the spiking estimate itself);
- ``slope_window_*`` (attrs): least-squares slope of ``log rmse`` versus ``log T``; a
  variance-dominated error falls as ``1/√(T R)`` (slope -1/2).

One simulation per seed serves every window (statistics read at nested window lengths)
and every ``R`` (the first ``R`` replicas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import whole_number
from neuroeq.engines.brian2_spiking import SpikingEngine
from neuroeq.engines.torch_engine import TorchEngine
from neuroeq.errors import ConfigError, short
from neuroeq.network import Network
from neuroeq.rules.oracles import ImplicitDifferentiation
from neuroeq.rules.stochastic_ep import StochasticEP, mean_field_limit
from neuroeq.seeds import check_seed

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def stochastic_vs_mean_field(network: Network, x: torch.Tensor, y: torch.Tensor, *,
                             beta: float = 0.1, windows: Sequence[int] = (250, 1000, 4000),
                             replicas: Sequence[int] = (1, 4), seeds: Iterable[int] = range(4),
                             centered: bool = True, burn_in: int | None = None,
                             target: str = "cython",
                             mean_field_engine: TorchEngine | None = None) -> xr.Dataset:
    """Bias, variance and cosine of stochastic EP against mean-field EP.

    ``x`` (B, n_in), ``y`` (B,). ``windows`` (steps) and ``replicas``: non-empty lists of
    distinct whole numbers of at least 1 (sorted); ``seeds``: distinct seeds (whole numbers
    ≥ 0), at least one; all checked before anything runs. Returns a Dataset with dims
    ``seed``, ``window``, ``replicas`` (see the module docstring); attrs hold the network,
    ``beta``, ``dt`` and the fitted slopes.
    """
    windows = _counts(windows, "windows", "steps")
    replicas = _counts(replicas, "replicas", "replicas per sample")
    seeds = _seeds(seeds)
    names = [n for n, _ in network.named_parameters() if not n.startswith("readout.")]
    x = x.to(network.dtype)
    probe = SpikingEngine(target=target)
    dt = probe.settings(network)[0]
    mean_field_engine = mean_field_engine or TorchEngine(dt=dt, tol=1e-10, max_steps=400_000)
    with torch.no_grad():
        free = mean_field_engine.relax(network, x)
    limit = mean_field_limit(network, x, y, beta, mean_field_engine, free, centered)
    true = ImplicitDifferentiation(mean_field_engine).estimate(network, (x, y), free=free,
                                                               write_grad=False)
    g = torch.cat([limit[n].reshape(-1) for n in names])
    estimates = np.full((len(seeds), len(windows), len(replicas), g.numel()), np.nan)
    for a, seed in enumerate(seeds):
        engine = SpikingEngine(target=target, window=windows[-1], snapshots=windows,
                               replicas=replicas[-1], burn_in=burn_in, seed=seed)
        rule = StochasticEP(beta, engine, centered=centered)
        spiking_free = engine.relax(network, x)
        phases = rule.phases(network, x, y, spiking_free)
        for b in range(len(windows)):
            for c, count in enumerate(replicas):
                grads = rule.combine_phases(network, x, spiking_free, phases, b, count)
                estimates[a, b, c] = torch.cat([grads[n].reshape(-1) for n in names]).cpu().numpy()
    g, true_g = g.cpu().numpy(), true.flat(names).cpu().numpy()
    norm = np.linalg.norm(g)
    cosine = (estimates @ g) / (np.linalg.norm(estimates, axis=-1) * norm)
    rel_error = np.linalg.norm(estimates - g, axis=-1) / norm
    mean = estimates.mean(0)
    bias = np.linalg.norm(mean - g, axis=-1) / norm
    variance = ((estimates - mean) ** 2).sum(-1).mean(0) / norm**2
    # the noise left in the mean of n seeds: tr Σ̂ / n, with Σ̂ unbiased (n - 1)
    n = len(seeds)
    noise_floor = np.sqrt(variance / (n - 1)) if n > 1 else np.full_like(variance, np.nan)
    beyond = np.sqrt(np.maximum(bias**2 - noise_floor**2, 0.0))
    rmse = np.sqrt((rel_error**2).mean(0))
    dataset = xr.Dataset(
        {"cosine": (("seed", "window", "replicas"), cosine),
         "rel_error": (("seed", "window", "replicas"), rel_error),
         "bias": (("window", "replicas"), bias),
         "variance": (("window", "replicas"), variance),
         "noise_floor": (("window", "replicas"), noise_floor),
         "bias_beyond_noise": (("window", "replicas"), beyond),
         "rmse": (("window", "replicas"), rmse),
         "estimate": (("seed", "window", "replicas", "element"), estimates),
         "mean_field": (("element",), g)},
        coords={"seed": seeds, "window": windows, "replicas": replicas,
                "element": np.arange(g.size)},
        attrs={"model": network.model.name, "sizes": list(network.sizes),
               "coupling": network.coupling, "batch": int(x.shape[0]), "beta": float(beta),
               "centered": int(centered), "dt_ms": dt * 1e3,
               "tau_over_dt": network.tau / dt, "parameters": ",".join(names),
               "mean_field_vs_true_cosine": _cosine(g, true_g),
               "mean_field_vs_true_rel_error": float(np.linalg.norm(g - true_g)
                                                     / np.linalg.norm(true_g))})
    for label, index in (("1", 0), ("max", -1)):
        dataset.attrs[f"slope_window_{label}"] = window_slope(dataset, replicas[index])
    return dataset


def _counts(values: Iterable[object], name: str, unit: str) -> list[int]:
    """``values`` sorted, as distinct whole numbers of at least 1 (at least one of them)."""
    values = _listed(values, name)
    counts = sorted(whole_number(v, f"stochastic_vs_mean_field: {name} ({unit}) entry", 1)
                    for v in values)
    _distinct(counts, name)
    return counts


def _seeds(values: Iterable[object]) -> list[int]:
    """``values`` as distinct seeds (at least one), in the order given."""
    seeds = [check_seed(v, "stochastic_vs_mean_field: seeds entry")
             for v in _listed(values, "seeds")]
    _distinct(seeds, "seeds")
    return seeds


def _listed(values: Iterable[object], name: str) -> list[object]:
    """``values`` as a non-empty list (a single number or a string refused)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"stochastic_vs_mean_field: {name} must be a list of whole "
                          f"numbers, got {values!r}")
    listed = list(values)
    if not listed:
        raise ConfigError(f"stochastic_vs_mean_field: {name} is empty; give at least one")
    return listed


def _distinct(values: list[int], name: str) -> None:
    """Refuse a value given twice (a repeated coordinate: ``sel`` could not pick one)."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"stochastic_vs_mean_field: {name} holds {short(repeated)} more "
                          "than once; give each once")


def window_slope(dataset: xr.Dataset, replicas: int) -> float:
    """Least-squares slope of ``log rmse`` versus ``log window`` at ``replicas``."""
    rmse = dataset.rmse.sel(replicas=replicas).values
    windows = dataset.window.values.astype(float)
    if len(windows) < 2:
        return float("nan")
    return float(np.polyfit(np.log(windows), np.log(rmse), 1)[0])


def plot_stochastic(dataset: xr.Dataset) -> Figure:
    """Two panels: RMS relative error (with the ``T^-1/2`` guide) and mean cosine versus
    window, one line per population size. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    windows = dataset.window.values
    for replicas in dataset.replicas.values:
        point = dataset.sel(replicas=replicas)
        left.loglog(windows, point.rmse, "o-", label=f"R = {replicas}")
        left.loglog(windows, point.bias, ":", color=left.lines[-1].get_color())
        right.semilogx(windows, point.cosine.mean("seed"), "o-", label=f"R = {replicas}")
    first = float(dataset.rmse.isel(window=0, replicas=0))
    left.loglog(windows, first * (windows / windows[0]) ** -0.5, "k--", lw=1,
                label="∝ window^-1/2")
    left.set(xlabel="window (steps)", ylabel="‖ĝ - g_MF‖ / ‖g_MF‖ (rms; dotted: bias)",
             title=f"slope {dataset.attrs.get('slope_window_1', float('nan')):.2f} (R = "
                   f"{int(dataset.replicas[0])})")
    right.set(xlabel="window (steps)", ylabel="cosine(ĝ, g_MF)", title="alignment")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return figure


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
