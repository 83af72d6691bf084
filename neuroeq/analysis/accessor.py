"""The ``.neq`` accessor: neuroeq's analysis functions as methods of any dataset, e.g.
``ds.neq.alignment()`` or ``ds.neq.plot_convergence()``. No subclassing of xarray types."""

from __future__ import annotations

from typing import TYPE_CHECKING

import xarray as xr

from neuroeq.analysis import alignment, learning, plasticity, traces

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure


@xr.register_dataset_accessor("neq")
class NeuroEQAccessor:
    """Analysis methods for neuroeq datasets (which methods apply depends on the dataset:
    gradient checks, training metrics, relaxation traces or weight changes)."""

    def __init__(self, dataset: xr.Dataset):
        self._dataset = dataset

    def alignment(self, over: str = "seed") -> xr.Dataset:
        return alignment.alignment_summary(self._dataset, over)

    def plot_alignment(self, **kwargs) -> Figure | SubFigure:
        return alignment.plot_alignment(self._dataset, **kwargs)

    def plot_learning_curves(self) -> Figure:
        return learning.plot_learning_curves(self._dataset)

    def plot_convergence(self, **kwargs) -> Figure | SubFigure:
        return traces.plot_convergence(self._dataset, **kwargs)

    def plot_phase_portrait(self, **kwargs) -> Figure | SubFigure:
        return traces.plot_phase_portrait(self._dataset, **kwargs)

    def plot_plasticity_map(self, **kwargs) -> Figure:
        return plasticity.plot_plasticity_map(self._dataset, **kwargs)
