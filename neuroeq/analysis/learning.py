"""Learning curves from training metrics (``metrics.nc``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import xarray as xr

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_learning_curves(metrics: xr.Dataset) -> Figure:
    """Accuracy (train and test) and loss against epoch, side by side."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    epochs = metrics.epoch.values
    for axis in (left, right):  # whole epochs on the axis, also for a run of one or two
        if len(epochs) <= 12:
            axis.set_xticks(epochs)
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.plot(epochs, 100 * metrics.train_accuracy, "o-", label="train (during epoch)")
    test = metrics.test_accuracy.dropna("epoch")
    left.plot(test.epoch.values, 100 * test, "s-", label="test")
    left.set_xlabel("epoch")
    left.set_ylabel("accuracy (%)")
    left.legend()
    right.plot(epochs, metrics.train_loss, "o-", label="train")
    test_loss = metrics.test_loss.dropna("epoch")
    right.plot(test_loss.epoch.values, test_loss, "s-", label="test")
    right.set_xlabel("epoch")
    right.set_ylabel("cost")
    right.legend()
    title = f"{metrics.attrs.get('model', '')} · {metrics.attrs.get('rule', '')}"
    figure.suptitle(f"learning curves ({title})", fontsize=10)
    figure.tight_layout()
    return figure
