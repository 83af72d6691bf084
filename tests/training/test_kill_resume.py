"""A training run killed with SIGKILL and restarted with ``--resume`` ends with exactly the
weights of an uninterrupted run (real subprocesses of ``python -m neuroeq run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neuroeq.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 5
PROTOCOL = f"""
[protocol]
name = "kill_resume"
kind = "train"
[model]
name = "hopfield"
[network]
sizes = [64, 24, 10]
dtype = "float32"
seed = 3
[engine]
free_steps = 15
nudged_steps = 6
tol = 0.0
[rule]
name = "ep"
beta = 0.5
random_sign = true
[data]
name = "digits"
[training]
epochs = {EPOCHS}
batch_size = 20
lr = 0.1
momentum = 0.5
seed = 7
checkpoint_every = 1
persistent_particles = true
limit_train = 400
limit_test = 100
[outputs]
figures = false
state_samples = 0
"""


def _command(protocol: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "neuroeq", "run", str(protocol), "--out", str(out),
            "--quiet", *extra]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True,
                          text=True, timeout=300)


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    protocol = tmp_path / "protocol.toml"
    protocol.write_text(PROTOCOL)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"

    done = _run(*_command(protocol, reference))
    assert done.returncode == 0, done.stderr

    process = subprocess.Popen(_command(protocol, interrupted), cwd=REPO, env=_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = interrupted / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    still_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert still_running, "the run ended before it could be killed"
    saved = load_checkpoint(checkpoint)  # complete: written atomically
    assert 1 <= saved["epoch"] < EPOCHS
    assert not (interrupted / "DONE").exists()
    # a write torn by a kill leaves at most a stray temporary file (named as now, or as an
    # earlier version named it); it must not matter
    (interrupted / ".checkpoint.pt.k3j4x9_a.tmp").write_bytes(b"torn write")
    (interrupted / f".checkpoint.pt.{process.pid}.tmp").write_bytes(b"torn write")

    refused = _run(*_command(protocol, interrupted))
    assert refused.returncode == 2
    assert "exists" in refused.stderr and "--force" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert load_checkpoint(checkpoint)["epoch"] == saved["epoch"]  # left untouched

    resumed = _run(*_command(protocol, interrupted, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    final, expected = load_checkpoint(checkpoint), load_checkpoint(reference / "checkpoint.pt")
    assert final["epoch"] == expected["epoch"] == EPOCHS
    assert final["network"].keys() == expected["network"].keys()
    for name, tensor in expected["network"].items():
        assert torch.equal(final["network"][name], tensor), name
    assert [row["train_loss"] for row in final["history"]] == \
        [row["train_loss"] for row in expected["history"]]
    assert (interrupted / "DONE").exists()
