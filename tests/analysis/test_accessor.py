"""The ``.neq`` accessor on datasets of every kind: the methods that apply run, the others
name the dataset they need and the file that holds it."""

import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

import neuroeq.analysis  # noqa: F401  (registers ds.neq)
from neuroeq.analysis import weight_changes
from neuroeq.errors import ConfigError

matplotlib.use("Agg")

EPOCHS = [1, 2]


def _metrics() -> xr.Dataset:
    values = {name: ("epoch", [0.5, 0.7]) for name in
              ("train_accuracy", "test_accuracy", "train_loss", "test_loss")}
    return xr.Dataset(values, coords={"epoch": EPOCHS})


def _states() -> xr.Dataset:
    shape = (2, 3, 5, 4)  # phase, sample, time, unit
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {"state": (("phase", "sample", "time", "unit"), rng.random(shape)),
         "residual": (("phase", "sample", "time"), rng.random(shape[:3]) + 0.1)},
        coords={"phase": ["free", "nudged+"], "time": np.arange(5.0),
                "layer": ("unit", ["hidden1"] * 4), "variable": ("unit", ["v", "v", "w", "w"])})


def _changes() -> xr.Dataset:
    return xr.Dataset({"W1": (("post", "pre"), np.ones((3, 4)))})


def _gradcheck() -> xr.Dataset:
    dims = ("seed", "rule", "beta")
    return xr.Dataset({"cosine": (dims, np.ones((2, 1, 2))),
                       "rel_error": (dims, np.full((2, 1, 2), 1e-3))},
                      coords={"rule": ["ep"], "beta": [1e-2, 1e-3]})


APPLIES = {  # method: the dataset it applies to, and the file its error names
    "alignment": (_gradcheck, "gradcheck.nc"),
    "plot_alignment": (_gradcheck, "gradcheck.nc"),
    "plot_learning_curves": (_metrics, "metrics.nc"),
    "plot_convergence": (_states, "states.nc"),
    "plot_phase_portrait": (_states, "states.nc"),
    "plot_plasticity_map": (_changes, "weight_changes.nc"),
}


@pytest.mark.parametrize("method", list(APPLIES))
def test_each_method_runs_on_its_dataset_and_names_it_on_the_others(method):
    make, file = APPLIES[method]
    assert getattr(make().neq, method)() is not None
    for other, _ in set(APPLIES.values()) - {APPLIES[method]}:
        dataset = other()
        with pytest.raises(ConfigError, match=rf"ds\.neq\.{method}\(\) needs .*\({file}"
                                              r".*this dataset's variables: "):
            getattr(dataset.neq, method)()


def test_a_named_variable_that_is_missing_is_named():
    with pytest.raises(ConfigError, match="no weight 'W2'; its weights: W1 "):
        _changes().neq.plot_plasticity_map(name="W2")
    with pytest.raises(ConfigError, match="has no dimension 'alpha' to plot against"):
        _gradcheck().neq.plot_alignment(x="alpha")


def test_a_weight_missing_from_a_weight_changes_file_lists_the_weights_it_has():
    """The dataset is the right file (as weight_changes() writes it); only the name is wrong."""
    before = {"W1": torch.zeros(3, 4), "W2": torch.zeros(2, 3), "b1": torch.zeros(3)}
    after = {key: value + 1 for key, value in before.items()}
    changes = weight_changes(before, after)
    with pytest.raises(ConfigError) as caught:
        changes.neq.plot_plasticity_map(name="W9")
    message = str(caught.value)
    assert "no weight 'W9'; its weights: W1, W2 " in message
    assert "needs" not in message
    assert changes.neq.plot_plasticity_map(name="W2") is not None
    assert changes.neq.plot_plasticity_map(name="W2_final") is not None


def test_learning_curves_of_a_short_run_have_whole_epochs_on_the_axis():
    one = _metrics().isel(epoch=[0])
    figure = one.neq.plot_learning_curves()
    for axis in figure.axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_accessor_methods_take_positional_arguments_as_their_functions_do():
    before = {"W1": torch.zeros(3, 4), "W2": torch.zeros(2, 3)}
    changes = weight_changes(before, {key: value + 1 for key, value in before.items()})
    heat = changes.neq.plot_plasticity_map("W2")  # name, positionally
    assert heat.axes[0].get_title() == "plasticity map ΔW (W2)"
    with pytest.raises(ConfigError, match="no weight 'W9'; its weights: W1, W2 "):
        changes.neq.plot_plasticity_map("W9")
    with pytest.raises(TypeError, match=r"ds\.neq\.plot_plasticity_map\(\): too many "
                                        "positional arguments"):
        changes.neq.plot_plasticity_map("W1", 4, None, "extra")
    cosine = _gradcheck().neq.plot_alignment("beta", "cosine")  # x, variable
    assert cosine.axes[0].get_ylabel() == "cos∠(ĝ, g)"
    assert float(_gradcheck().neq.alignment("seed").cosine_mean.mean()) == 1.0
    traces = _states()
    assert traces.neq.plot_phase_portrait("hidden1", 1, 2) is not None  # layer, units, sample


def _gradcheck_with_estimates() -> xr.Dataset:
    dims = ("model", "seed", "rule", "beta")
    rng = np.random.default_rng(4)
    return xr.Dataset({"estimate": ((*dims, "element"), rng.random((2, 2, 1, 2, 5))),
                       "true": ((*dims, "element"), rng.random((2, 2, 1, 2, 5))),
                       "rel_error": (dims, rng.random((2, 2, 1, 2)))},
                      coords={"model": ["fhn", "hopfield"], "rule": ["ep"],
                              "beta": [1e-2, 1e-3]})


def test_alignment_over_a_dimension_it_lacks_names_the_dimensions_allowed():
    checked = _gradcheck_with_estimates()
    with pytest.raises(ConfigError, match="cannot average over 'element': cosine and "
                                          "rel_error share the dimensions model, seed, rule, "
                                          "beta; give over= one of them"):
        checked.neq.alignment(over="element")
    with pytest.raises(ConfigError, match="cannot average over 'alpha'"):
        _gradcheck().neq.alignment(over="alpha")
    assert checked.neq.alignment(over="model").cosine_mean.dims == ("seed", "rule", "beta")


def test_a_selection_the_dataset_lacks_names_the_values_it_has():
    checked = _gradcheck_with_estimates()
    with pytest.raises(ConfigError, match="plot_alignment: no model 'zzz' in this dataset; "
                                          "its model values: 'fhn', 'hopfield'"):
        checked.neq.plot_alignment(model="zzz")
    with pytest.raises(ConfigError, match="no beta 0.5 in this dataset; its beta values: "
                                          "0.01, 0.001"):
        checked.neq.plot_alignment(model="fhn", beta=[0.01, 0.5])
    with pytest.raises(ConfigError, match="no dimension 'coupling' to select; the data's "
                                          "dimensions: model, seed, rule, beta"):
        checked.neq.plot_alignment(model="fhn", coupling="symmetric")
    assert checked.neq.plot_alignment(model="fhn") is not None
    # xarray's own options of sel pass: the nearest beta, not an exact one
    one_model = checked.isel(model=[0])  # (nearest to a string: pandas cannot)
    assert one_model.neq.plot_alignment(beta=[0.011, 0.001], method="nearest") is not None
