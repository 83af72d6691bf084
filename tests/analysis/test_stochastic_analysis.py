"""The stochastic-versus-mean-field analysis returns a well-formed dataset and a figure."""

import numpy as np
import pytest
import torch

from neuroeq import Network
from neuroeq.analysis.stochastic import plot_stochastic, stochastic_vs_mean_field, window_slope

pytestmark = pytest.mark.brian2


def test_stochastic_vs_mean_field_dataset_and_figure():
    network = Network("spiking_rate", (5, 6, 3), seed=0, gain=0.5, bias_init=0.5)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (2,), generator=generator)
    dataset = stochastic_vs_mean_field(network, x, y, beta=0.1, windows=(100, 800),
                                       replicas=(1, 2), seeds=(0, 1), burn_in=50,
                                       target="numpy")
    assert dict(dataset.sizes) == {"seed": 2, "window": 2, "replicas": 2,
                                   "element": dataset.sizes["element"]}
    assert np.isfinite(dataset.cosine.values).all()
    # more averaging, smaller error (8x the window and 2x the replicas)
    assert float(dataset.rmse.sel(window=800, replicas=2)) < \
        float(dataset.rmse.sel(window=100, replicas=1))
    bias = dataset.bias.values
    assert (bias ** 2 <= dataset.rmse.values ** 2 + 1e-12).all()  # rmse² = bias² + variance
    np.testing.assert_allclose(dataset.rmse.values ** 2,
                               bias ** 2 + dataset.variance.values, rtol=1e-9)
    # two seeds: the noise in their mean is the variance over n - 1 = 1
    np.testing.assert_allclose(dataset.noise_floor.values ** 2, dataset.variance.values,
                               rtol=1e-9)
    np.testing.assert_allclose(dataset.bias_beyond_noise.values ** 2,
                               np.maximum(bias ** 2 - dataset.variance.values, 0), atol=1e-15)
    assert window_slope(dataset, 1) < 0
    assert dataset.attrs["mean_field_vs_true_cosine"] > 0.9
    figure = plot_stochastic(dataset)
    assert len(figure.axes) == 2
