"""Plots on datasets they must handle: sweeps, other variable names, missing layers,
phases recorded at their own times, NaN entries."""

import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

import neuroeq.analysis  # noqa: F401  (registers ds.neq)
from neuroeq import Network, TorchEngine
from neuroeq.analysis import record_relaxation
from neuroeq.errors import ConfigError

matplotlib.use("Agg")


def test_a_phase_that_is_not_a_multiple_of_the_chunk_is_recorded_at_its_own_time():
    """12 free and 8 nudged steps in chunks of 5: the free phase at 0, 5, 10, 12 steps and
    the nudged ones at 0, 5, 8 (they were labelled 0, 5, 10), each the state after as many
    steps of a relaxation of its own."""
    network = Network("hopfield", (6, 5, 3), seed=0)
    engine = TorchEngine(tol=0.0)
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 2])
    traces = record_relaxation(network, engine, x, y, beta=0.5, chunk=5, free_steps=12,
                               nudged_steps=8)
    dt_ms = traces.attrs["dt_ms"]
    np.testing.assert_allclose(traces.time.values, np.array([0, 5, 8, 10, 12]) * dt_ms)
    assert traces.time.attrs["units"] == "ms"
    recorded = traces.residual.isel(sample=0).notnull()
    assert recorded.sel(phase="free").values.tolist() == [True, True, False, True, True]
    assert recorded.sel(phase="nudged+").values.tolist() == [True, True, True, False, False]
    free = engine.relax(network, x, max_steps=12, tol=0.0).state
    nudged = engine.relax(network, x, y=y, beta=0.5, init=free, max_steps=8, tol=0.0).state
    np.testing.assert_allclose(traces.state.sel(phase="nudged+", time=8 * dt_ms).values,
                               nudged.detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("solver", ["anderson", "gauss_seidel"])
def test_traces_follow_the_dynamics_whatever_the_solver(solver):
    # the engine's accelerated solver would record its own iterates on the dt time axis
    network = Network("fhn", (8, 6, 3), seed=0)
    x = torch.rand(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    euler = record_relaxation(network, TorchEngine(tol=0.0), x, chunk=10, free_steps=30)
    other = record_relaxation(network, TorchEngine(tol=0.0, solver=solver), x, chunk=10,
                              free_steps=30)
    np.testing.assert_array_equal(other.state.values, euler.state.values)


def _two_variable_traces(second: str, layers=("hidden1", "output")) -> xr.Dataset:
    units = [(layer, variable) for layer in layers for variable in ("v", second)] * 2
    return xr.Dataset(
        {"state": (("phase", "time", "sample", "unit"), np.random.default_rng(0).random(
            (1, 4, 1, len(units)))),
         "residual": (("phase", "time", "sample"), np.full((1, 4, 1), np.nan))},
        coords={"phase": ["free"], "time": np.arange(4.0),
                "layer": ("unit", [u[0] for u in units]),
                "variable": ("unit", [u[1] for u in units])})


def test_the_phase_portrait_takes_the_models_own_second_variable():
    figure = _two_variable_traces("u").neq.plot_phase_portrait()
    axis = figure.axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("v", "u")
    assert len(axis.lines) == 4  # two units: a trajectory and its end point each


def test_the_phase_portrait_names_the_layers_it_has():
    traces = _two_variable_traces("w", layers=("output",))
    assert traces.neq.plot_phase_portrait().axes[0].get_title().startswith("output")
    with pytest.raises(ConfigError, match="no layer 'hidden2' in these traces; they hold "
                                          "output"):
        traces.neq.plot_phase_portrait(layer="hidden2")


def test_convergence_skips_a_phase_without_finite_residuals():
    traces = _two_variable_traces("w")
    nudged = traces.assign_coords(phase=["nudged+"]).copy(deep=True)
    nudged["residual"][:] = 0.5
    figure = xr.concat([traces, nudged], "phase").neq.plot_convergence()
    assert [line.get_label() for line in figure.axes[0].lines] == ["nudged+"]


def _sweep_metrics() -> xr.Dataset:
    grid = {"lr": [0.1, 0.3], "seed": [0, 1]}
    shape = (2, 2, 3)
    values = np.random.default_rng(1).random(shape)
    values[1, 1] = np.nan  # a failed point
    return xr.Dataset({name: (("lr", "seed", "epoch"), values) for name in
                       ("train_accuracy", "test_accuracy", "train_loss", "test_loss")},
                      coords={**grid, "epoch": [1, 2, 3]}, attrs={"title": "neuroeq sweep s"})


def test_learning_curves_of_a_sweep_draw_one_colour_per_finished_point():
    figure = _sweep_metrics().neq.plot_learning_curves()
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert [label for label in labels if label.endswith("test")] == [
        "lr=0.1, seed=0: test", "lr=0.1, seed=1: test", "lr=0.3, seed=0: test"]
    with pytest.raises(ConfigError, match="select some first"):
        xr.concat([_sweep_metrics()] * 4, "lr").assign_coords(
            lr=np.arange(8.0)).neq.plot_learning_curves()


def test_plasticity_maps_of_hidden_weights_are_heat_maps_and_ignore_nan():
    delta = np.random.default_rng(2).normal(size=(10, 64))
    delta[0, 0] = np.nan
    changes = xr.Dataset({"W1": (("W1_post", "W1_pre"), delta),
                          "W2": (("W2_post", "W2_pre"), delta[:, :16].T @ delta[:, :16])})
    receptive = changes.neq.plot_plasticity_map(name="W1", units=4)
    assert len([a for a in receptive.axes if a.images]) == 4  # 8×8 input images
    limit = receptive.axes[0].images[0].get_clim()[1]
    assert np.isfinite(limit) and limit > 0
    heat = changes.neq.plot_plasticity_map(name="W2")  # a 16-unit hidden layer: no image
    assert len(heat.axes[0].images) == 1 and heat.axes[0].get_xlabel() == "presynaptic unit"
    with pytest.raises(ConfigError, match="units must be a whole number of at least 1"):
        changes.neq.plot_plasticity_map(name="W1", units=0)


def _gradcheck() -> xr.Dataset:
    shape = (2, 2, 3)  # seed, rule, beta
    values = np.random.default_rng(3).random(shape) + 0.01
    return xr.Dataset({"rel_error": (("seed", "rule", "beta"), values),
                       "cosine": (("seed", "rule", "beta"), 1 - values)},
                      coords={"seed": [0, 1], "rule": ["ep", "centered"],
                              "beta": [1e-3, 1e-2, 1e-1]})


def test_alignment_of_one_selected_rule_and_a_missing_axis():
    one = _gradcheck().neq.plot_alignment(rule="ep")
    assert [line.get_label() for line in one.axes[0].lines] == ["ep"]
    with pytest.raises(ConfigError, match="rel_error has no dimension 'beta' to plot against "
                                          r"\(after the selection it has seed\)"):
        _gradcheck().isel(beta=0).neq.plot_alignment()
    # an alignment over another setting (asymmetry.nc: alpha) is named, not called another kind
    over_alpha = _gradcheck().rename(beta="alpha")
    with pytest.raises(ConfigError, match=r"no dimension 'beta' to plot against \(after the "
                                          r"selection it has seed, alpha\); give x="):
        over_alpha.neq.plot_alignment()
    assert over_alpha.neq.plot_alignment(x="alpha").axes[0].get_xlabel() == "asymmetry α"


def test_alignment_refuses_to_pool_a_dimension_that_is_not_the_seed():
    data = _gradcheck().expand_dims(alpha=[0.0, 1.0]).copy()
    with pytest.raises(ConfigError, match=r"also varies along alpha \(besides beta and the "
                                          r"seeds it averages\): select one value of each, "
                                          r"e.g. alpha=0.0"):
        data.neq.plot_alignment()
    figure = data.neq.plot_alignment(alpha=1.0)  # one value: one line per rule
    assert [line.get_label() for line in figure.axes[0].lines] == ["ep", "centered"]


@pytest.mark.parametrize("option", ["free_steps", "nudged_steps"])
@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_a_phase_of_no_steps_is_refused_not_run_for_the_whole_budget(option, steps):
    network = Network("hopfield", (6, 5, 3), seed=0)
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ConfigError, match=rf"record_relaxation: {option} must be a whole "
                                          r"number of at least 1, got .* \(None runs the "
                                          r"engine's budget\)"):
        record_relaxation(network, TorchEngine(tol=0.0), x, torch.tensor([0, 2]), beta=0.5,
                          **{option: steps})


def test_no_step_count_runs_the_engines_budget_and_chunks_must_advance():
    network = Network("hopfield", (6, 5, 3), seed=0)
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    traces = record_relaxation(network, TorchEngine(tol=0.0, max_steps=7), x,
                               torch.tensor([0, 2]), beta=0.5, chunk=5, nudged_steps=3)
    dt_ms = traces.attrs["dt_ms"]
    np.testing.assert_allclose(traces.time.values, np.array([0, 3, 5, 7]) * dt_ms)
    assert traces.residual.sel(phase="free").notnull().all("sample").values.tolist() == [
        True, False, True, True]
    with pytest.raises(ConfigError, match="record_relaxation: chunk must be a whole number "
                                          "of at least 1, got 0"):
        record_relaxation(network, TorchEngine(tol=0.0), x, chunk=0, free_steps=5)


def test_a_sample_the_traces_do_not_hold_is_named_with_the_range():
    traces = _two_variable_traces("w")  # one sample, no sample coordinate
    for sample in (99, -1, 1.5):
        with pytest.raises(ConfigError, match=rf"sample {sample!r} is not in these traces; "
                                              "they hold samples 0 to 0"):
            traces.neq.plot_phase_portrait(sample=sample)
    labelled = traces.assign_coords(sample=[7])
    assert labelled.neq.plot_phase_portrait(sample=7) is not None
    with pytest.raises(ConfigError, match=r"no sample 0 in these traces; their samples: \[7\]"):
        labelled.neq.plot_phase_portrait(sample=0)


def test_an_image_shape_that_does_not_hold_the_inputs_names_both_sizes():
    changes = xr.Dataset({"W1": (("W1_post", "W1_pre"), np.ones((3, 16))),
                          "W2": (("W2_post", "W2_pre"), np.ones((2, 3)))})
    with pytest.raises(ConfigError, match=r"image_shape \(7, 7\) has 49 pixels, but W1 has 16 "
                                          "inputs .* product must equal the number of inputs"):
        changes.neq.plot_plasticity_map(image_shape=(7, 7))
    with pytest.raises(ConfigError, match=r"image_shape must be a pair \(rows, columns\), "
                                          "got 16"):
        changes.neq.plot_plasticity_map(image_shape=16)
    with pytest.raises(ConfigError, match="image_shape's sizes must be a whole number of at "
                                          "least 1, got 0"):
        changes.neq.plot_plasticity_map(image_shape=(0, 16))
    figure = changes.neq.plot_plasticity_map(image_shape=(2, 8), units=3)
    assert [a.images[0].get_array().shape for a in figure.axes if a.images] == [(2, 8)] * 3
    hidden = changes.neq.plot_plasticity_map(name="W2", image_shape=(1, 3))  # any layer
    assert len([a for a in hidden.axes if a.images]) == 2
