"""Gradient alignment: how well a rule's estimate points along the true gradient, from
gradient-check datasets (``neuroeq gradcheck``) or asymmetry sweeps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from neuroeq.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

#: keyword arguments of ``DataArray.sel`` that are options, not dimensions
SEL_OPTIONS = ("method", "tolerance", "drop")


def cosine(estimate: xr.DataArray, true: xr.DataArray, dim: str = "element") -> xr.DataArray:
    """``cos∠(ĝ, g) = ĝ·g / (‖ĝ‖‖g‖)`` along ``dim`` (NaN padding ignored)."""
    estimate, true = estimate.fillna(0.0), true.fillna(0.0)
    dot = (estimate * true).sum(dim)
    return dot / np.sqrt((estimate ** 2).sum(dim) * (true ** 2).sum(dim))


def alignment_summary(dataset: xr.Dataset, over: str = "seed") -> xr.Dataset:
    """Mean and spread over ``over`` of ``cosine`` and ``rel_error`` (and of the angle in
    degrees); recomputed from ``estimate``/``true`` when those are present."""
    cos = cosine(dataset.estimate, dataset.true) if "estimate" in dataset else dataset.cosine
    _check_over(over, cos, dataset.rel_error)
    angle = np.degrees(np.arccos(cos.clip(-1.0, 1.0)))
    return xr.Dataset({
        "cosine_mean": cos.mean(over), "cosine_std": cos.std(over),
        "angle_deg_mean": angle.mean(over),
        "rel_error_mean": dataset.rel_error.mean(over),
        "rel_error_std": dataset.rel_error.std(over)}, attrs=dict(dataset.attrs))


def _check_over(over: object, cos: xr.DataArray, rel_error: xr.DataArray) -> None:
    """Refuse a dimension ``over`` that cosine and rel_error do not both have (``element``
    is summed into the cosine), naming the dimensions there are."""
    allowed = [str(d) for d in cos.dims if d in rel_error.dims]
    if over not in allowed:
        raise ConfigError(f"alignment: cannot average over {over!r}: cosine and rel_error "
                          f"share the dimensions {', '.join(allowed) or 'none'}; give over= "
                          "one of them")


def _check_selection(data: xr.DataArray, selection: dict[str, Any]) -> None:
    """Refuse a ``selection`` (``model="fhn"``) of a dimension ``data`` lacks or of a value
    its coordinate does not hold, naming what there is (xarray's own KeyError names
    neither). xarray's own options of ``sel`` pass (``method="nearest"``: values unchecked)."""
    options = {key for key in SEL_OPTIONS if key in selection and key not in data.coords}
    inexact = "method" in options and selection["method"] is not None
    for key, value in selection.items():
        if key in options:
            continue
        if key not in data.dims and key not in data.coords:
            raise ConfigError(f"plot_alignment: no dimension {key!r} to select; the data's "
                              f"dimensions: {', '.join(map(str, data.dims)) or 'none'}")
        if key not in data.coords or isinstance(value, slice) or inexact:
            continue
        known = data[key].values.tolist()
        known = known if isinstance(known, list) else [known]
        wanted = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        missing = [v for v in wanted if (v.item() if hasattr(v, "item") else v) not in known]
        if missing:
            raise ConfigError(f"plot_alignment: no {key} {missing[0]!r} in this dataset; its "
                              f"{key} values: {', '.join(map(repr, known))}")


def plot_alignment(dataset: xr.Dataset, x: str = "beta", variable: str = "rel_error",
                   ax: Axes | None = None, **selection: Any) -> Figure | SubFigure:
    """One line per rule of ``variable`` (``rel_error`` or ``cosine``) against ``x``
    (``beta`` or ``alpha``), mean over seeds with a min-max band; log axes for β. Every
    other dimension must hold one value after ``selection`` (``model=``, ``alpha=``, ...):
    averaging over it would pass off its effect as the seeds' spread."""
    import matplotlib.pyplot as plt

    if variable not in dataset.data_vars:
        raise ConfigError(f"plot_alignment: no variable {variable!r} in this dataset; its "
                          f"variables: {', '.join(map(str, dataset.data_vars)) or 'none'}")
    _check_selection(dataset[variable], selection)
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
