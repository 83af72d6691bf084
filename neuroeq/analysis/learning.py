"""Learning curves from training metrics (``metrics.nc``, or a sweep's ``sweep.nc``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from neuroeq.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the most sweep points drawn in one figure (more: select some first)
MAX_CURVES = 12


def whole_epoch_ticks(axis: Axes, epochs: np.ndarray) -> None:
    """Whole epochs on the x axis, also for a run of one or two."""
    from matplotlib.ticker import MaxNLocator

    if len(epochs) <= 12:
        axis.set_xticks(epochs)
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curves(metrics: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    """``(label, metrics of one run)``: one unlabelled run, or each point of a sweep (its
    grid dimensions besides ``epoch``) labelled ``lr=0.3, seed=0``."""
    grid = [d for d in metrics.test_accuracy.dims if d != "epoch"]
    if not grid:
        return [("", metrics)]
    stacked = metrics.stack(point=grid)
    if stacked.sizes["point"] > MAX_CURVES:
        raise ConfigError(f"plot_learning_curves: {stacked.sizes['point']} runs along "
                          f"{', '.join(grid)}, more than {MAX_CURVES} in one figure; select "
                          f"some first, e.g. ds.sel({grid[0]}=...)")
    curves = []
    for i in range(stacked.sizes["point"]):
        run = stacked.isel(point=i)
        label = ", ".join(f"{d}={run[d].item()}" for d in grid)
        if bool(run.train_accuracy.notnull().any()):  # failed points have no curve
            curves.append((label, run))
    if not curves:
        raise ConfigError("plot_learning_curves: no point of this sweep has metrics (every "
                          "one failed; see its status and error variables)")
    return curves


def plot_learning_curves(metrics: xr.Dataset) -> Figure:
    """Accuracy (train and test) and loss against epoch, side by side; for a sweep's
    combined dataset, one colour per grid point (test solid, train dotted)."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    epochs = metrics.epoch.values
    for axis in (left, right):
        whole_epoch_ticks(axis, epochs)
    curves = _curves(metrics)
    for label, run in curves:
        own = f"{label}: " if label else ""
        test = run.test_accuracy.dropna("epoch")
        line, = left.plot(test.epoch.values, 100 * test, "s-", label=f"{own}test")
        colour = line.get_color() if label else None
        left.plot(epochs, 100 * run.train_accuracy, "o:" if label else "o-", color=colour,
                  label=f"{own}train (during epoch)" if not label else None)
        test_loss = run.test_loss.dropna("epoch")
        right.plot(test_loss.epoch.values, test_loss, "s-", color=colour, label=f"{own}test")
        right.plot(epochs, run.train_loss, "o:" if label else "o-", color=colour,
                   label="train" if not label else None)
    left.set_xlabel("epoch")
    left.set_ylabel("accuracy (%)")
    right.set_xlabel("epoch")
    right.set_ylabel("cost")
    for axis in (left, right):
        axis.legend(fontsize=8 if len(curves) <= 3 else 6)
    title = f"{metrics.attrs.get('model', '')} · {metrics.attrs.get('rule', '')}"
    if len(curves) > 1 or curves[0][0]:
        title = f"{metrics.attrs.get('title', 'sweep')}; train dotted"
    figure.suptitle(f"learning curves ({title})", fontsize=10)
    figure.tight_layout()
    return figure
