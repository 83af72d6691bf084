"""Gradient alignment: how well a rule's estimate points along the true gradient, from
gradient-check datasets (``neuroeq gradcheck``) or asymmetry sweeps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure


def cosine(estimate: xr.DataArray, true: xr.DataArray, dim: str = "element") -> xr.DataArray:
    """``cos∠(ĝ, g) = ĝ·g / (‖ĝ‖‖g‖)`` along ``dim`` (NaN padding ignored)."""
    estimate, true = estimate.fillna(0.0), true.fillna(0.0)
    dot = (estimate * true).sum(dim)
    return dot / np.sqrt((estimate ** 2).sum(dim) * (true ** 2).sum(dim))


def alignment_summary(dataset: xr.Dataset, over: str = "seed") -> xr.Dataset:
    """Mean and spread over ``over`` of ``cosine`` and ``rel_error`` (and of the angle in
    degrees); recomputed from ``estimate``/``true`` when those are present."""
    cos = cosine(dataset.estimate, dataset.true) if "estimate" in dataset else dataset.cosine
    angle = np.degrees(np.arccos(cos.clip(-1.0, 1.0)))
    return xr.Dataset({
        "cosine_mean": cos.mean(over), "cosine_std": cos.std(over),
        "angle_deg_mean": angle.mean(over),
        "rel_error_mean": dataset.rel_error.mean(over),
        "rel_error_std": dataset.rel_error.std(over)}, attrs=dict(dataset.attrs))


def plot_alignment(dataset: xr.Dataset, x: str = "beta", variable: str = "rel_error",
                   ax: Axes | None = None, **selection: Any) -> Figure | SubFigure:
    """One line per rule of ``variable`` (``rel_error`` or ``cosine``) against ``x``
    (``beta`` or ``alpha``), mean over seeds with a min-max band; log axes for β. Every
    other dimension must hold one value after ``selection`` (``model=``, ``alpha=``, ...):
    averaging over it would pass off its effect as the seeds' spread."""
    import matplotlib.pyplot as plt

    from neuroeq.errors import ConfigError

    data = dataset[variable].sel(**selection)
    if "rule" not in data.dims:  # one rule selected (rule="ep"): a line of its own
        data = data.expand_dims("rule") if "rule" in data.coords else data.expand_dims(
            rule=[variable])
    if x not in data.dims:
        others = [d for d in data.dims if d != "rule"]
        raise ConfigError(f"plot_alignment: {variable} has no dimension {x!r} to plot against "
                          f"(after the selection it has {', '.join(others) or 'none'}); give "
                          f"x= one of them, or select less")
    varying = {d: data[d].values[:3].tolist() if d in data.coords else data.sizes[d]
               for d in data.dims if d not in (x, "rule", "seed") and data.sizes[d] > 1}
    if varying:
        name, values = next(iter(varying.items()))
        raise ConfigError(f"plot_alignment: {variable} also varies along "
                          f"{', '.join(varying)} (besides {x} and the seeds it averages): "
                          f"select one value of each, e.g. {name}={values[0]!r} (values "
                          f"{values}...), or plot against it with x={name!r}"
                          if isinstance(values, list) else
                          f"plot_alignment: {variable} also varies along "
                          f"{', '.join(varying)}: select one value of each")
    data = data.squeeze([d for d in data.dims if d not in (x, "rule", "seed")])
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    extra = [d for d in data.dims if d not in (x, "rule")]
    for rule in data.rule.values:
        line = data.sel(rule=rule)
        mean = line.mean(extra) if extra else line
        low = line.min(extra) if extra else line
        high = line.max(extra) if extra else line
        ax.plot(line[x].values, mean.values, "o-", label=str(rule))
        ax.fill_between(line[x].values, low.values, high.values, alpha=0.15)
    if x == "beta":
        ax.set_xscale("log")
    if variable == "rel_error":
        ax.set_yscale("log")
    ax.set_xlabel({"beta": "β", "alpha": "asymmetry α"}.get(x, x))
    ax.set_ylabel({"rel_error": "‖ĝ - g‖ / ‖g‖", "cosine": "cos∠(ĝ, g)"}.get(variable,
                                                                            variable))
    ax.legend(fontsize=8)
    ax.set_title("gradient alignment with the true gradient")
    return ax.figure
