"""A result folder keeps what it says about earlier runs: a failed ``--resume`` leaves its
protocol, done marker and metrics as they were, the temporaries and lock of a killed run
do not block the next one, and ``--force`` never discards results before a run is done."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from neuroeq.errors import ConfigError
from neuroeq.protocols import load_protocol, run_protocol
from neuroeq.protocols.folder_lock import lock_path
from neuroeq.training.checkpoint import load_checkpoint

from .test_run import QUICK, TINY_TRAIN

REPO = Path(__file__).resolve().parents[2]
LONGER = ["training.epochs=2", "outputs.figures=false", "outputs.state_samples=0"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A finished one-epoch training run in ``tmp_path/run``."""
    return run_protocol(load_protocol(TINY_TRAIN, QUICK), tmp_path / "run", progress=False)


# ------------------------------------------------------------------ a: failed --resume
def test_a_refused_resume_leaves_the_folder_byte_identical(finished):
    before = _files(finished)
    changed = load_protocol(TINY_TRAIN, LONGER + ["rule.beta=0.9"])
    with pytest.raises(ConfigError, match="differ from its protocol.toml: rule.beta"):
        run_protocol(changed, finished, resume=True, progress=False)
    assert _files(finished) == before
    (finished / "checkpoint.pt").write_bytes(b"torn")
    before = _files(finished)
    with pytest.raises(ConfigError, match="unreadable or corrupt"):
        run_protocol(load_protocol(TINY_TRAIN, LONGER), finished, resume=True, progress=False)
    assert _files(finished) == before


def test_a_resume_refused_by_its_runner_leaves_the_folder_byte_identical(finished,
                                                                         monkeypatch):
    """A refusal found once the run has started (here: the data cannot be loaded) restores
    the folder, its log included."""
    from neuroeq.protocols import build

    def no_data(config):
        raise ConfigError("data set 'digits' not found under data.root")

    monkeypatch.setattr(build, "build_data", no_data)
    before = _files(finished)
    with pytest.raises(ConfigError, match="not found under data.root"):
        run_protocol(load_protocol(TINY_TRAIN, LONGER), finished, resume=True, progress=False)
    assert _files(finished) == before


def test_a_resume_that_fails_before_training_restores_what_the_folder_said(finished,
                                                                           monkeypatch):
    """Training that raises before it wrote anything (a crash, Ctrl+C): the done marker,
    protocol.toml and metrics.nc are as they were; the log keeps the failed attempt."""
    import neuroeq.training

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(neuroeq.training, "train", crash)
    before = _files(finished)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(load_protocol(TINY_TRAIN, LONGER), finished, resume=True, progress=False)
    after = _files(finished)
    assert "failed: KeyboardInterrupt" in after.pop("log.txt").decode()
    before.pop("log.txt")
    assert after == before


def test_a_resume_whose_first_epoch_fails_restores_the_metrics_too(finished, monkeypatch):
    """Training that stops in its first resumed epoch rewrites metrics.nc (the same epochs,
    the new protocol's attributes) but no checkpoint: that is put back as well."""
    from neuroeq.errors import TrainingError
    from neuroeq.training import trainer

    def nan_weights(*args):
        raise TrainingError("the parameters W1 became NaN or inf in epoch 2")

    monkeypatch.setattr(trainer, "_train_epoch", nan_weights)
    before = _files(finished)
    with pytest.raises(TrainingError, match="became NaN"):
        run_protocol(load_protocol(TINY_TRAIN, LONGER), finished, resume=True, progress=False)
    after = _files(finished)
    assert "failed: TrainingError" in after.pop("log.txt").decode()
    before.pop("log.txt")
    assert after == before


def test_a_resume_that_fails_after_a_new_checkpoint_says_it_is_unfinished(finished,
                                                                          monkeypatch):
    """Once the resumed run has written (epoch 2's checkpoint), the folder is that run's:
    no done marker, its protocol.toml; a further --resume finishes it."""
    from neuroeq.training import trainer

    real_epoch = trainer._train_epoch

    def fail_in_epoch_3(*args):
        if args[7] == 3:
            raise RuntimeError("out of memory")
        return real_epoch(*args)

    monkeypatch.setattr(trainer, "_train_epoch", fail_in_epoch_3)
    three = load_protocol(TINY_TRAIN, QUICK + ["training.epochs=3"])
    with pytest.raises(RuntimeError, match="out of memory"):
        run_protocol(three, finished, resume=True, progress=False)
    assert not (finished / "DONE").exists()
    assert "epochs = 3" in (finished / "protocol.toml").read_text()
    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    run_protocol(three, finished, resume=True, progress=False)
    assert (finished / "DONE").is_file()
    assert list(xr.open_dataset(finished / "metrics.nc").epoch.values) == [1, 2, 3]


# ------------------------------------------------------- b: what a killed run leaves
def test_temporaries_of_a_killed_write_do_not_block_the_next_run(tmp_path, finished):
    """A run killed before its first result leaves its log, its protocol and maybe a
    temporary: the folder is free (not 'exists', not 'files no run wrote'); a finished
    folder with temporaries and a stale lock resumes and is replaced, and the run removes
    the temporaries."""
    quick = load_protocol(TINY_TRAIN, QUICK)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / ".protocol.toml.k3j4x9_a.tmp").write_text("# resolved from")  # killed mid-write
    assert (run_protocol(quick, stub, progress=False) / "DONE").is_file()
    assert not list(stub.glob(".*.tmp"))
    (stub / "metrics.nc").unlink()
    (stub / "weight_changes.nc").unlink()
    (stub / "checkpoint.pt").unlink()
    (stub / "DONE").unlink()
    (stub / ".metrics.nc.abcdefgh.tmp").write_bytes(b"torn")
    assert (run_protocol(quick, stub, progress=False) / "DONE").is_file()

    stale = [finished / ".checkpoint.pt.4242.tmp", finished / ".metrics.nc.q1w2e3r4.tmp"]
    for path in stale:
        path.write_bytes(b"torn write")
    lock_path(finished).write_text("")  # a lock file whose run died (not locked)
    with pytest.raises(ConfigError, match="exists; pass --force"):  # refused: untouched
        run_protocol(quick, finished, progress=False)
    assert all(path.exists() for path in stale)
    run_protocol(load_protocol(TINY_TRAIN, LONGER), finished, resume=True, progress=False)
    assert not any(path.exists() for path in stale) and (finished / "DONE").is_file()
    (finished / ".DONE.zz11yy22.tmp").write_text("")
    run_protocol(quick, finished, force=True, progress=False)
    assert not list(finished.glob(".*.tmp")) and not lock_path(finished).exists()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_folder_the_next_run_takes(tmp_path):
    """A real ``neuroeq run`` killed mid-run: its lock file stays (unlocked) and the next
    runs, with --force and with --resume, go ahead."""
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(load_protocol(TINY_TRAIN, ["training.epochs=30",
                                                   "outputs.figures=false",
                                                   "outputs.state_samples=0"]).to_toml())
    out = tmp_path / "run"
    command = [sys.executable, "-m", "neuroeq", "run", str(protocol), "--out", str(out),
               "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    running = process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert running, "the run ended before it could be killed"
    assert lock_path(out).exists() and not (out / "DONE").exists()
    (out / ".metrics.nc.torn0001.tmp").write_bytes(b"torn")
    epochs = load_checkpoint(out / "checkpoint.pt")["epoch"] + 1  # one more than it made
    for extra in (["--resume", "--set", f"training.epochs={epochs}"], ["--force"]):
        again = subprocess.run(command + extra, cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert (out / "DONE").is_file() and not list(out.glob(".*.tmp"))


# ---------------------------------------------------------- c: --force and NAME.previous
def test_force_moves_the_old_results_aside_while_it_runs(finished, monkeypatch):
    from neuroeq.protocols import runner

    before, seen = _files(finished), []
    real = runner.RUNNERS["train"]

    def look(protocol, out, *args, **kwargs):
        seen.append(_files(out.with_name("run.previous")))
        return real(protocol, out, *args, **kwargs)

    monkeypatch.setitem(runner.RUNNERS, "train", look)
    run_protocol(load_protocol(TINY_TRAIN, QUICK), finished, force=True, progress=False)
    assert seen == [before] and not finished.with_name("run.previous").exists()


def test_force_keeps_results_no_finished_run_replaced(tmp_path, finished):
    """First results in NAME.previous (a --force that failed), a plain run done in NAME:
    a further --force must not discard the first results before it is done; it refuses,
    naming both folders, and goes ahead once one of them is moved away."""
    first = _files(finished)
    broken = load_protocol(TINY_TRAIN, QUICK + ["network.sizes=[64,8,9]"])
    with pytest.raises(ConfigError):
        run_protocol(broken, finished, force=True, progress=False)
    kept = tmp_path / "run.previous"
    with pytest.warns(RuntimeWarning, match="stay in"):
        run_protocol(load_protocol(TINY_TRAIN, QUICK), finished, progress=False)
    second = _files(finished)
    with pytest.raises(ConfigError, match=r"run\.previous' holds the results an earlier "
                                          r"--force run was to replace"):
        run_protocol(broken, finished, force=True, progress=False)
    assert _files(kept) == first and _files(finished) == second
    shutil.move(kept, tmp_path / "first")
    with pytest.raises(ConfigError, match="classes"):
        run_protocol(broken, finished, force=True, progress=False)
    assert _files(kept) == second  # the failed run keeps what it was to replace


def test_force_keeps_an_unfinished_runs_results(tmp_path, finished, monkeypatch):
    """A --force run interrupted after it wrote results leaves them in NAME and the results
    it replaces in NAME.previous: another --force keeps both (refused; --resume finishes
    the interrupted run and removes NAME.previous)."""
    from neuroeq.protocols import runner

    real_run_in = runner._run_in

    def interrupted(protocol, folder, previous, **options):  # killed after epoch 1
        real_run_in(protocol, folder, None, **options)
        (folder / "DONE").unlink()
        raise KeyboardInterrupt

    first = _files(finished)
    monkeypatch.setattr(runner, "_run_in", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(load_protocol(TINY_TRAIN, QUICK + ["network.seed=2"]), finished,
                     force=True, progress=False)
    monkeypatch.setattr(runner, "_run_in", real_run_in)
    unfinished, kept = _files(finished), tmp_path / "run.previous"
    with pytest.raises(ConfigError, match=r"holds the results of an unfinished run, .*; --resume "
                                          r"continues the unfinished run"):
        run_protocol(load_protocol(TINY_TRAIN, QUICK), finished, force=True, progress=False)
    assert _files(kept) == first and _files(finished) == unfinished
    run_protocol(load_protocol(TINY_TRAIN, LONGER + ["network.seed=2"]), finished,
                 resume=True, progress=False)
    assert not kept.exists() and (finished / "DONE").is_file()


def test_force_completes_the_removal_a_finished_force_run_left(tmp_path, finished,
                                                             monkeypatch):
    """A --force run killed after its done marker, before it removed NAME.previous: those
    results were replaced by a finished run, so the next --force removes them and sets the
    finished run aside in their place."""
    from neuroeq.protocols import runner

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(load_protocol(TINY_TRAIN, QUICK + ["network.seed=2"]), finished,
                     force=True, progress=False)
    monkeypatch.undo()
    kept = tmp_path / "run.previous"
    assert (finished / "DONE").is_file() and (finished / "REPLACES").is_file()
    second, seen = _files(finished), []
    real = runner.RUNNERS["train"]

    def look(protocol, out, *args, **kwargs):
        seen.append(_files(kept))
        return real(protocol, out, *args, **kwargs)

    monkeypatch.setitem(runner.RUNNERS, "train", look)
    run_protocol(load_protocol(TINY_TRAIN, QUICK), finished, force=True, progress=False)
    assert seen == [second]
    assert not kept.exists() and not (finished / "REPLACES").exists()
