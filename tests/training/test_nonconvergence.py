"""Training when the dynamics do not settle: ``on_nonconvergence`` stop / skip / continue
behave as documented in ``TrainConfig`` and the per-epoch counts are recorded."""

from __future__ import annotations

import contextlib

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.data import load_dataset
from neuroeq.errors import RelaxationError
from neuroeq.rules import CenteredEP
from neuroeq.training import TrainConfig, train

BATCHES = 2


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=20 * BATCHES), load_dataset("digits", "test", limit=20)


def _run(digits, policy: str, max_steps: int, on_failure: str = "raise", out_dir=None,
         tol: float = 1e-12):
    network = Network("hopfield_smooth", (64, 8, 10), seed=0, dtype=torch.float64)
    before = {k: v.detach().clone() for k, v in network.state_dict().items()}
    engine = TorchEngine(tol=tol, max_steps=max_steps, on_failure=on_failure)
    config = TrainConfig(epochs=1, batch_size=20, lr=0.1, on_nonconvergence=policy)
    metrics = train(network, CenteredEP(0.5, engine), *digits, config, out_dir=out_dir,
                    progress=False)
    changed = any(not torch.equal(before[k], v) for k, v in network.state_dict().items())
    return metrics, changed


def test_stop_raises_with_the_layer_and_samples(digits):
    for on_failure in ("raise", "warn"):  # an engine told to warn still stops training
        warns = (pytest.warns(RuntimeWarning, match="did not settle") if on_failure == "warn"
                 else contextlib.nullcontext())
        with pytest.raises(RelaxationError) as caught, warns:
            _run(digits, "stop", max_steps=5, on_failure=on_failure)
        assert caught.value.kind == "not_converged"
        assert caught.value.layer and caught.value.samples


def test_skip_leaves_the_weights_and_counts_every_batch(digits, tmp_path):
    metrics, changed = _run(digits, "skip", max_steps=5, out_dir=tmp_path)
    assert not changed
    assert int(metrics.skipped_batches[0]) == int(metrics.unsettled_batches[0]) == BATCHES
    import xarray as xr

    with xr.open_dataset(tmp_path / "metrics.nc") as saved:
        assert int(saved.skipped_batches[0]) == BATCHES


def test_continue_learns_from_unsettled_states_and_counts_them(digits):
    metrics, changed = _run(digits, "continue", max_steps=5)
    assert changed
    assert int(metrics.unsettled_batches[0]) == BATCHES
    assert int(metrics.skipped_batches[0]) == 0


def test_settled_dynamics_count_nothing(digits):
    metrics, changed = _run(digits, "skip", max_steps=5_000, tol=1e-4)
    assert changed
    assert int(metrics.unsettled_batches[0]) == int(metrics.skipped_batches[0]) == 0

