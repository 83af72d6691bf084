"""Analysis of neuroeq datasets: functions that take ``xarray.Dataset``s and return
datasets or matplotlib figures (gradient alignment, plasticity maps, convergence traces,
phase portraits, learning curves). Importing the package registers the ``.neq`` dataset
accessor. The notebooks in the repository's ``analysis/`` folder use these functions.
:mod:`neuroeq.analysis.stochastic` (spiking StochEP against mean-field EP) needs Brian2 and
is imported on its own."""

from neuroeq.analysis import accessor  # noqa: F401  (registers ds.neq)
from neuroeq.analysis.alignment import alignment_summary, cosine, plot_alignment
from neuroeq.analysis.learning import plot_learning_curves
from neuroeq.analysis.plasticity import plot_plasticity_map, weight_changes
from neuroeq.analysis.traces import plot_convergence, plot_phase_portrait, record_relaxation

__all__ = [
    "alignment_summary", "cosine", "plot_alignment", "plot_convergence", "plot_learning_curves",
    "plot_phase_portrait", "plot_plasticity_map", "record_relaxation", "weight_changes",
]
