"""A checkpoint is written only if it can be read back without unpickling code."""

import errno
import os
import pickle
import re
from pathlib import Path

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


def _previous_checkpoint(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "W": torch.ones(2)})
    return path, path.read_bytes()


def test_a_checkpoint_is_written_through_a_temporary_that_remove_temporaries_knows(
        tmp_path, monkeypatch):
    """While it is written, the checkpoint is a temporary beside it whose name
    remove_temporaries cleans (a run killed then leaves only that behind)."""
    from neuroeq.io import is_temporary

    path, _ = _previous_checkpoint(tmp_path)
    seen = []
    save = torch.save

    def spy(payload, handle):
        seen.append(Path(handle.name))
        save(payload, handle)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint(path, {"epoch": 2})
    assert len(seen) == 1 and seen[0].parent == path.parent and seen[0] != path
    assert is_temporary(seen[0].name) and seen[0].name.startswith(".checkpoint.pt.")
    assert load_checkpoint(path) == {"epoch": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),  # a full disk
    pickle.PicklingError("cannot pickle 'generator' object"),  # a payload torch cannot save
])
def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(
        tmp_path, monkeypatch, failure):
    path, before = _previous_checkpoint(tmp_path)

    def fail_midway(payload, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(type(failure)) as error:
        save_checkpoint(path, {"epoch": 2, "W": torch.zeros(2)})
    if isinstance(failure, OSError):  # named by the checkpoint, not by its temporary
        assert str(path) in str(error.value) and ".tmp" not in str(error.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


def test_a_failed_fsync_keeps_the_previous_checkpoint_and_leaves_no_temporary(
        tmp_path, monkeypatch):
    path, before = _previous_checkpoint(tmp_path)

    def fail(descriptor):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match=rf"cannot write {re.escape(repr(str(path)))}: "
                                      "Input/output error"):
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
