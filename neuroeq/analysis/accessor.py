"""The ``.neq`` accessor: neuroeq's analysis functions as methods of any dataset, e.g.
``ds.neq.alignment()`` or ``ds.neq.plot_convergence()``. No subclassing of xarray types."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import xarray as xr

from neuroeq.analysis import alignment, learning, plasticity, traces
from neuroeq.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure


#: what each kind of dataset is, and which file of a result folder holds it
KINDS = {
    "gradcheck": "a gradient check (gradcheck.nc of a gradcheck protocol)",
    "metrics": "a training run's metrics (metrics.nc)",
    "states": "a training run's relaxation traces (states.nc)",
    "changes": "a training run's weight changes (weight_changes.nc)",
}


@xr.register_dataset_accessor("neq")
class NeuroEQAccessor:
    """Analysis methods for neuroeq datasets (which methods apply depends on the dataset:
    gradient checks, training metrics, relaxation traces or weight changes). A method
    called on a dataset of another kind names what it needs and the file that has it."""

    def __init__(self, dataset: xr.Dataset):
        self._dataset = dataset

    def _require(self, method: str, kind: str, *names: str) -> None:
        """Raise a :class:`ConfigError` unless every name is a variable, coordinate or
        dimension of the dataset."""
        dataset = self._dataset
        missing = [n for n in names if n not in dataset.variables and n not in dataset.dims]
        if missing:
            present = ", ".join(sorted(map(str, dataset.data_vars))) or "none"
            raise ConfigError(f"ds.neq.{method}() needs {KINDS[kind]}, with "
                              f"{', '.join(missing)}; this dataset's variables: {present}")

    def alignment(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        if "estimate" in self._dataset:
            self._require("alignment", "gradcheck", "estimate", "true", "rel_error")
        else:
            self._require("alignment", "gradcheck", "cosine", "rel_error")
        # (a dimension ``over`` that is not there is named by alignment_summary)
        return alignment.alignment_summary(self._dataset, *args, **kwargs)

    def plot_alignment(self, *args: Any, **kwargs: Any) -> Figure | SubFigure:
        # (a missing x, beta by default, is named by plot_alignment with the dimensions
        # there are: an asymmetry sweep's alignment is plotted against x="alpha")
        given = _arguments(alignment.plot_alignment, self._dataset, args, kwargs)
        self._require("plot_alignment", "gradcheck", given["variable"], "rule")
        return alignment.plot_alignment(self._dataset, *args, **kwargs)

    def plot_learning_curves(self) -> Figure:
        self._require("plot_learning_curves", "metrics", "epoch", "train_accuracy",
                      "test_accuracy", "train_loss", "test_loss")
        return learning.plot_learning_curves(self._dataset)

    def plot_convergence(self, *args: Any, **kwargs: Any) -> Figure | SubFigure:
        self._require("plot_convergence", "states", "residual", "phase", "time", "sample")
        return traces.plot_convergence(self._dataset, *args, **kwargs)

    def plot_phase_portrait(self, *args: Any, **kwargs: Any) -> Figure | SubFigure:
        self._require("plot_phase_portrait", "states", "state", "phase", "variable", "layer",
                      "sample")
        return traces.plot_phase_portrait(self._dataset, *args, **kwargs)

    def plot_plasticity_map(self, *args: Any, **kwargs: Any) -> Figure:
        name = _arguments(plasticity.plot_plasticity_map, self._dataset, args, kwargs)["name"]
        weights = _weight_names(self._dataset)
        if weights and name not in self._dataset.data_vars:
            raise ConfigError(f"ds.neq.plot_plasticity_map(): this weight-changes dataset has "
                              f"no weight {name!r}; its weights: {', '.join(weights)} "
                              "(pass name= one of them)")
        self._require("plot_plasticity_map", "changes", name)
        return plasticity.plot_plasticity_map(self._dataset, *args, **kwargs)


def _arguments(function: Callable[..., Any], dataset: xr.Dataset, args: tuple,
               kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``function(dataset, *args, **kwargs)`` would see, defaults filled in
    (so that the accessor reads ``name`` or ``variable`` given either way); a call that
    does not fit the signature raises Python's own :class:`TypeError`."""
    try:
        bound = inspect.signature(function).bind(dataset, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"ds.neq.{function.__name__}(): {error}") from None
    bound.apply_defaults()
    return bound.arguments


def _weight_names(dataset: xr.Dataset) -> list[str]:
    """The ΔW names of a weight-changes dataset (every variable a ``(…post, …pre)``
    matrix, as :func:`~neuroeq.analysis.plasticity.weight_changes` writes), else ``[]``."""
    matrices = {str(key): value.dims for key, value in dataset.data_vars.items()}
    if not matrices or not all(len(dims) == 2 and str(dims[0]).endswith("post")
                               and str(dims[1]).endswith("pre") for dims in matrices.values()):
        return []
    return sorted(key for key in matrices
                  if not (key.endswith("_final") and key[:-len("_final")] in matrices))
