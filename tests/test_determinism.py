"""The same seed gives the same numbers: training metrics and weights in the torch engine,
spiking statistics in the Brian2 spiking engine; another seed gives other numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.data import load_dataset
from neuroeq.rules import ClassicEP
from neuroeq.training import TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=120), load_dataset("digits", "test", limit=60)


def _train(digits, network_seed: int = 0, training_seed: int = 0):
    network = Network("hopfield", (64, 16, 10), seed=network_seed, dtype=torch.float32)
    rule = ClassicEP(0.5, TorchEngine(max_steps=10, tol=0.0), random_sign=True,
                     seed=training_seed)
    config = TrainConfig(epochs=2, batch_size=30, lr=0.1, momentum=0.5,
                         persistent_particles=True, seed=training_seed)
    metrics = train(network, rule, *digits, config, progress=False)
    return metrics, network.state_dict()


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torch_training_is_reproducible_and_ignores_the_global_random_state(digits):
    metrics, weights = _train(digits)
    torch.manual_seed(12345)  # disturb every global generator between the runs
    torch.rand(100)
    np.random.seed(999)
    again_metrics, again_weights = _train(digits)
    assert _same_weights(weights, again_weights)
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert np.array_equal(metrics[name].values, again_metrics[name].values), name
    _, other_network = _train(digits, network_seed=1)
    _, other_training = _train(digits, training_seed=1)
    assert not _same_weights(weights, other_network)
    assert not _same_weights(weights, other_training)


@pytest.mark.brian2
def test_spiking_statistics_repeat_with_the_seed():
    from neuroeq.engines.brian2_spiking import SpikingEngine

    network = Network("spiking_rate", (4, 5, 2), seed=0, gain=0.5, bias_init=0.5)
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def phase(seed: int):
        engine = SpikingEngine(target="numpy", window=100, burn_in=10, replicas=2, seed=seed)
        return engine.relax(network, x)

    first = phase(11)
    np.random.seed(5)  # Brian2's numpy target draws from numpy; seed() must reset it
    np.random.rand(10)
    torch.rand(10)
    again, other = phase(11), phase(12)
    for layer, rates in first.rates.items():
        assert torch.equal(rates, again.rates[layer]), layer
        assert torch.equal(first.membranes[layer], again.membranes[layer]), layer
    for name, value in first.coincidences.items():
        assert torch.equal(value, again.coincidences[name]), name
    assert torch.equal(first.state, again.state)
    assert any(not torch.equal(rates, other.rates[layer])
               for layer, rates in first.rates.items())
    assert sum(float(rates.sum()) for rates in first.rates.values()) > 0  # neurons spiked
