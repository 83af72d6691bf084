"""A checkpoint is written only if it can be read back without unpickling code."""

import numpy as np
import pytest
import torch

from neuroeq.errors import TrainingError
from neuroeq.training.checkpoint import load_checkpoint, save_checkpoint


def test_a_payload_of_tensors_and_plain_values_round_trips(tmp_path):
    payload = {"epoch": 2, "network": {"W": torch.ones(2, 3)}, "history": [{"loss": 0.5}],
               "betas": (0.9, 0.999), "shape": torch.Size([2, 3]), "none": None}
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert loaded["history"] == payload["history"] and torch.equal(loaded["network"]["W"],
                                                                   payload["network"]["W"])


@pytest.mark.parametrize("bad, where", [
    ({"history": [{"loss": np.float64(0.5)}]}, r"\['history'\]\[0\]\['loss'\] holds a "
                                               r"numpy.float64"),
    ({"config": {"extra": {"n": np.int64(1)}}}, r"\['config'\]\['extra'\]\['n'\]"),
    ({"rule": object()}, r"\['rule'\] holds a builtins.object"),
])
def test_a_payload_that_could_not_be_read_back_is_refused_unwritten(tmp_path, bad, where):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingError, match=where):
        save_checkpoint(path, {"epoch": 1, **bad})
    assert list(tmp_path.iterdir()) == []
