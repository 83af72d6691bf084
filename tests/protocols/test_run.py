"""``neuroeq run``: a protocol in, a result folder out (config copy, log, datasets,
figures); existing folders are not overwritten without --force; resume continues."""

import os
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
import xarray as xr

from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.protocols import load_protocol, run_protocol
from neuroeq.protocols.build import build_network
from neuroeq.protocols.sweep_file import load_sweep

TINY_TRAIN = {
    "protocol": {"name": "tiny", "kind": "train"},
    "model": {"name": "hopfield"},
    "network": {"sizes": [64, 16, 10], "seed": 1},
    "engine": {"free_steps": 15, "nudged_steps": 5, "tol": 0.0},
    "rule": {"name": "centered", "beta": 0.5},
    "data": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.2, "limit_train": 320,
                 "limit_test": 100},
    "outputs": {"state_samples": 2, "trace_chunk": 5, "dpi": 40},
}


def test_train_protocol_writes_a_complete_result_folder(tmp_path):
    out = run_protocol(load_protocol(TINY_TRAIN), tmp_path / "run", progress=False)
    for name in ("protocol.toml", "log.txt", "metrics.nc", "weight_changes.nc", "states.nc",
                 "checkpoint.pt", "DONE", "figures/learning_curves.png",
                 "figures/plasticity_W1.png", "figures/convergence.png",
                 "figures/overview.png"):
        assert (out / name).is_file(), name
    resolved = tomllib.loads((out / "protocol.toml").read_text())
    assert resolved["training"]["epochs"] == 2 and resolved["network"]["sizes"] == [64, 16, 10]
    metrics = xr.open_dataset(out / "metrics.nc")
    assert list(metrics.epoch.values) == [1, 2]
    assert float(metrics.test_accuracy[-1]) > 0.3  # chance is 0.1
    assert metrics.attrs["protocol"] == "tiny"
    states = xr.open_dataset(out / "states.nc")
    assert list(states.phase.values) == ["free", "nudged+", "nudged-"]
    assert states.state.sizes["unit"] == 26
    # the free phase settles: its residual falls
    free = states.residual.sel(phase="free").dropna("time")
    assert float(free[-1].max()) < float(free[0].max())
    changes = xr.open_dataset(out / "weight_changes.nc")
    assert changes.W1.shape == (16, 64) and float(abs(changes.W1).max()) > 0
    assert "epoch 2" in (out / "log.txt").read_text()


def test_a_run_sets_records_and_restores_its_thread_count(tmp_path, capsys):
    """``threads`` sets torch's CPU threads for the run only; the log and every dataset
    name the count (results agree bit for bit at one count, not across counts)."""
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    protocol = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false",
                                          "outputs.state_samples=0"])
    out = run_protocol(protocol, tmp_path / "run", progress=False, threads=threads)
    assert torch.get_num_threads() == before
    for name in ("metrics.nc", "weight_changes.nc"):
        attrs = xr.open_dataset(out / name).attrs
        assert attrs["torch_threads"] == threads and attrs["torch_version"] == torch.__version__
    log = (out / "log.txt").read_text()
    assert f"torch {torch.__version__} with {threads} CPU thread(s)" in log
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match=f"threads must be a whole number of at least 1, "
                                              f"got {bad!r}"):
            run_protocol(protocol, tmp_path / "bad", progress=False, threads=bad)
    assert not (tmp_path / "bad").exists()
    many = (os.cpu_count() or 1) + 1  # more threads than cores: allowed, with a warning
    with pytest.warns(RuntimeWarning, match=f"{many} torch threads on {os.cpu_count()} cores"):
        run_protocol(protocol, tmp_path / "many", progress=False, threads=many)
    assert torch.get_num_threads() == before
    assert "WARNING" in (tmp_path / "many" / "log.txt").read_text()
    path = tmp_path / "tiny.toml"
    path.write_text((out / "protocol.toml").read_text())
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--threads", "0"]) == 2
    assert "--threads must be a whole number of at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_existing_results_are_kept_unless_forced(tmp_path):
    protocol = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false",
                                          "outputs.state_samples=0"])
    out = run_protocol(protocol, tmp_path / "run", progress=False)
    before = (out / "metrics.nc").read_bytes()
    with pytest.raises(ConfigError, match="exists; pass --force"):
        run_protocol(protocol, out, progress=False)
    assert (out / "metrics.nc").read_bytes() == before
    # resume with more epochs continues from the checkpoint
    longer = load_protocol(TINY_TRAIN, ["training.epochs=2", "outputs.figures=false",
                                        "outputs.state_samples=0"])
    run_protocol(longer, out, resume=True, progress=False)
    assert list(xr.open_dataset(out / "metrics.nc").epoch.values) == [1, 2]
    # fewer epochs than the checkpoint holds: refused before DONE or protocol.toml change
    files = {name: (out / name).read_bytes() for name in ("protocol.toml", "metrics.nc",
                                                           "checkpoint.pt", "DONE")}
    with pytest.raises(ConfigError, match="holds 2 epochs; epochs=1 asks for fewer"):
        run_protocol(protocol, out, resume=True, progress=False)
    assert {name: (out / name).read_bytes() for name in files} == files


def test_force_keeps_the_results_it_replaces_until_the_new_run_is_done(tmp_path, capsys,
                                                                    monkeypatch):
    """A --force run that fails (here when the network is built) leaves the folder it was
    to replace as NAME.previous and says so; a second failed attempt does not displace
    it; a run that is done removes it."""
    quick = ["training.epochs=1", "outputs.figures=false", "outputs.state_samples=0"]
    out = run_protocol(load_protocol(TINY_TRAIN, quick), tmp_path / "run", progress=False)
    files = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    previous = tmp_path / "run.previous"
    failing = load_protocol(TINY_TRAIN, quick + ["network.sizes=[64, 16, 5]"])
    with pytest.raises(ConfigError, match="5 output units") as error:
        run_protocol(failing, out, force=True, progress=False)
    assert f"kept in {str(previous)!r}" in " ".join(error.value.__notes__)
    assert "kept in" in (out / "log.txt").read_text() and not (out / "DONE").exists()
    path = tmp_path / "failing.toml"
    path.write_text(failing.to_toml())
    assert main(["run", str(path), "--out", str(out), "--force", "--quiet"]) != 0
    assert f"kept in {str(previous)!r}" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in previous.iterdir() if p.is_file()} == files
    run_protocol(load_protocol(TINY_TRAIN, quick), out, force=True, progress=False)
    assert (out / "DONE").is_file() and not previous.exists()
    with pytest.raises(ConfigError, match="exists; pass --force"):
        run_protocol(failing, out, progress=False)  # without --force nothing moves
    assert (out / "DONE").is_file() and not previous.exists()
    with pytest.raises(ConfigError, match="exclude each other"):
        run_protocol(failing, out, force=True, resume=True, progress=False)
    assert main(["run", str(path), "--out", str(out), "--force", "--resume"]) != 0
    assert "not allowed with argument" in capsys.readouterr().err
    monkeypatch.chdir(out)
    with pytest.raises(ConfigError, match="holds the current directory"):
        run_protocol(failing, Path("."), force=True, progress=False)
    assert (out / "DONE").is_file()
    # a folder holding only a failed attempt's log and protocol has nothing to keep: a
    # --force run that fails too does not claim to keep "results" in NAME.previous
    monkeypatch.chdir(tmp_path)
    stub = tmp_path / "stub"
    with pytest.raises(ConfigError, match="5 output units"):
        run_protocol(failing, stub, progress=False)
    assert sorted(p.name for p in stub.iterdir()) == ["log.txt", "protocol.toml"]
    with pytest.raises(ConfigError, match="5 output units") as error:
        run_protocol(failing, stub, force=True, progress=False)
    assert not getattr(error.value, "__notes__", None)
    assert not (tmp_path / "stub.previous").exists()


def test_an_identity_readout_must_have_one_unit_per_class_of_the_data(tmp_path):
    """Caught when the network is built, before any batch runs (the log says why); a
    linear readout maps 5 units to the 10 classes."""
    out = tmp_path / "run"
    protocol = load_protocol(TINY_TRAIN, ["network.sizes=[64, 16, 5]"])
    with pytest.raises(ConfigError, match=r"ends in 5 output units but the data have 10 "
                                          r'classes.*readout = "linear"'):
        run_protocol(protocol, out, progress=False)
    assert "5 output units" in (out / "log.txt").read_text()
    assert not (out / "metrics.nc").exists() and not (out / "DONE").exists()
    linear = load_protocol(TINY_TRAIN, ["network.sizes=[64, 16, 5]", 'network.readout="linear"',
                                        "training.epochs=1", "outputs.figures=false",
                                        "outputs.state_samples=0"])
    assert (run_protocol(linear, tmp_path / "linear", progress=False) / "DONE").is_file()


def test_a_resumed_run_keeps_the_settings_it_was_made_with(tmp_path):
    """--resume may extend training.epochs and change [outputs]; any other change is
    refused before anything in the folder is touched (its protocol.toml still describes
    its results)."""
    quick = ["training.epochs=1", "outputs.figures=false", "outputs.state_samples=0"]
    out = run_protocol(load_protocol(TINY_TRAIN, quick), tmp_path / "run", progress=False)
    files = {name: (out / name).read_bytes() for name in ("protocol.toml", "metrics.nc",
                                                           "checkpoint.pt")}
    for change in ("rule.beta=0.9", "network.sizes=[64, 12, 10]", "training.lr=0.1"):
        changed = load_protocol(TINY_TRAIN, quick + ["training.epochs=2", change])
        with pytest.raises(ConfigError, match=rf"--resume continues the run .* differ from "
                                              rf"its protocol.toml: {change.split('=')[0]} "):
            run_protocol(changed, out, resume=True, progress=False)
        assert {name: (out / name).read_bytes() for name in files} == files
    longer = load_protocol(TINY_TRAIN, quick + ["training.epochs=2", "outputs.dpi=30",
                                                "training.checkpoint_every=2"])
    run_protocol(longer, out, resume=True, progress=False)
    assert list(xr.open_dataset(out / "metrics.nc").epoch.values) == [1, 2]


def test_a_checkpoint_of_another_network_is_named_not_loaded(tmp_path):
    from neuroeq import Network
    from neuroeq.data import load_dataset
    from neuroeq.rules import make_rule
    from neuroeq.training import TrainConfig, train

    data = load_dataset("digits", "train")
    config = TrainConfig(epochs=1, batch_size=64, limit_train=128)
    rule = make_rule("centered", beta=0.5)
    train(Network("hopfield", (64, 8, 10)), rule, data, None, config, out_dir=tmp_path,
          progress=False)
    longer = TrainConfig(epochs=2, batch_size=64, limit_train=128)
    with pytest.raises(ConfigError, match="saved from another network or optimizer than "
                                          "this one .*size mismatch for weights.W1"):
        train(Network("hopfield", (64, 12, 10)), rule, data, None, longer, out_dir=tmp_path,
              resume=True, progress=False)


def test_gradcheck_protocol_from_the_cli(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text('[protocol]\nname = "g"\nkind = "gradcheck"\n[gradcheck]\n'
                    'sizes = [6, 5, 3]\nrules = ["centered", "asym", "implicit"]\n'
                    'betas = [1e-2, 1e-3]\nbatch = 2\n[outputs]\ndpi = 40\n')
    assert main(["run", str(path), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    # the folder's contents as they are
    assert capsys.readouterr().out.strip().endswith(
        "g/: gradcheck.nc, log.txt, protocol.toml, table.md, figures/ (1)")
    dataset = xr.open_dataset(tmp_path / "g" / "gradcheck.nc")
    assert float(dataset.cosine.sel(rule="asym", beta=1e-3).min()) > 0.9999
    assert (tmp_path / "g" / "table.md").read_text().startswith("| model")
    assert (tmp_path / "g" / "figures" / "alignment_hopfield_smooth_symmetric.png").is_file()
    # a training protocol's --resume into this folder: nothing to resume, the folder as it was
    before = {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="nothing to resume in .*: it holds a 'gradcheck' "
                                          "run \\(protocol 'g'\\), not a 'train' run"):
        run_protocol(load_protocol(TINY_TRAIN), tmp_path / "g", resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir() if p.is_file()} == before


def test_shipped_protocols_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "protocols"
    files = sorted(folder.glob("*.toml"))
    assert any(f.name == "demo.toml" for f in files)
    for path in files:
        if "[sweep]" in path.read_text():
            load_sweep(path)
        else:
            load_protocol(path)


def test_snn_baseline_protocol_learns_the_builtin_task(tmp_path):
    protocol = load_protocol({
        "protocol": {"name": "snn", "kind": "snn_bptt"},
        "network": {"sizes": [64, 32, 10]},
        "training": {"epochs": 5, "batch_size": 32, "lr": 1e-2, "limit_train": 600,
                     "limit_test": 200},
        "snn": {"num_steps": 8}, "outputs": {"figures": False}})
    out = run_protocol(protocol, tmp_path / "snn", progress=False)
    metrics = xr.open_dataset(out / "metrics.nc")
    assert float(metrics.test_accuracy[-1]) > 0.7  # chance is 0.1; measured 0.90
    assert float(metrics.samples_per_second[-1]) > 0 and float(metrics.peak_rss_mb[-1]) > 0


@pytest.mark.brian2
def test_training_in_the_brian2_engine_matches_the_torch_engine(tmp_path):
    """The same protocol trained with the Brian2 engine and with the torch engine (float64,
    phases settled to a tight tolerance) ends with the same weights."""
    import torch

    settings = ["training.epochs=1", "training.limit_train=32", "training.limit_test=16",
                "network.sizes=[64, 6, 10]", "network.dtype=\"float64\"",
                "engine.tol=1e-8", "engine.free_steps=5000", "engine.nudged_steps=5000",
                "outputs.state_samples=0", "outputs.figures=false"]
    demo = Path(__file__).resolve().parents[2] / "protocols" / "demo.toml"
    runs = {}
    for engine in ("torch", "brian2"):
        target = ['engine.target="numpy"'] if engine == "brian2" else []
        protocol = load_protocol(demo, [*settings, f"engine.name=\"{engine}\"", *target])
        out = run_protocol(protocol, tmp_path / engine, progress=False)
        runs[engine] = torch.load(out / "checkpoint.pt", weights_only=True)["network"]
    for name, value in runs["torch"].items():
        assert torch.allclose(value, runs["brian2"][name], atol=1e-6), name
    initial = build_network(load_protocol(demo, settings).config).weights["W1"]
    assert not torch.allclose(runs["torch"]["weights.W1"], initial.detach())  # it learned


def test_a_run_that_failed_before_writing_results_leaves_its_folder_free(tmp_path):
    """A folder holding only a failed attempt's log and protocol is not a result: fixing
    the protocol and running again needs no --force (the log keeps the failed attempt)."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="5 output units"):
        run_protocol(load_protocol(TINY_TRAIN, ["network.sizes=[64, 16, 5]"]), out,
                     progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["log.txt", "protocol.toml"]
    quick = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false",
                                       "outputs.state_samples=0"])
    assert (run_protocol(quick, out, progress=False) / "DONE").is_file()
    assert "5 output units" in (out / "log.txt").read_text()
    with pytest.raises(ConfigError, match="nothing to resume in .*never_made.* run without "
                                          "--resume"):
        run_protocol(quick, tmp_path / "never_made", resume=True, progress=False)
    assert not (tmp_path / "never_made").exists()


def test_a_folder_of_other_files_is_refused_even_with_force(tmp_path):
    """--force replaces a run's own result folder, never a folder of other files."""
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    quick = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false"])
    for force in (False, True):
        with pytest.raises(ConfigError, match=r"holds files that no neuroeq run wrote "
                                              r"\(chapter1.tex\)"):
            run_protocol(quick, out, force=force, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="'.*afile' is a file; give --out a folder"):
        run_protocol(quick, afile, force=True, progress=False)
    assert afile.read_text() == "x"


def test_a_folder_another_run_is_writing_to_is_refused(tmp_path):
    from neuroeq.protocols.folder_lock import folder_lock, lock_path

    quick = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false",
                                       "outputs.state_samples=0"])
    out = run_protocol(quick, tmp_path / "run", progress=False)
    assert not lock_path(out).exists()  # released and removed when the run is done
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with folder_lock(out):  # as a run in another process would hold it
        for options in ({"force": True}, {"resume": True}):
            with pytest.raises(ConfigError, match="another run is writing to"):
                run_protocol(quick, out, progress=False, **options)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_unwritable_outputs_are_named_before_anything_runs(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(load_protocol(TINY_TRAIN).to_toml())
    assert main(["run", str(protocol), "--out", str(afile / "sub"), "--quiet"]) == 2
    assert "afile' is a file, not a folder" in capsys.readouterr().err
    # gradcheck's --out and --markdown are checked before the gradients are computed
    assert main(["gradcheck", "--sizes", "4,3,2", "--rules", "ep", "--out",
                 str(tmp_path)]) == 2
    assert "is a folder; give the name of a file" in capsys.readouterr().err
    assert main(["gradcheck", "--sizes", "4,3,2", "--rules", "ep", "--markdown",
                 str(afile / "t.md")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at most 4 per core"):
        run_protocol(load_protocol(TINY_TRAIN), tmp_path / "threads", progress=False,
                     threads=10_000)


def test_a_run_that_locked_a_removed_lock_file_locks_the_new_one(tmp_path, monkeypatch):
    """A run that opened OUT/.lock just before the run holding it ended (and removed it)
    must not hold a lock on the removed file: it takes the lock of the file now there."""
    from neuroeq.protocols import folder_lock as module

    real_flock, calls = module.fcntl.flock, []

    def flock_after_the_holder_left(handle, operation):
        calls.append(handle)
        if len(calls) == 1:  # the holder removes the file between our open and our flock
            module.lock_path(tmp_path).unlink()
        return real_flock(handle, operation)

    monkeypatch.setattr(module.fcntl, "flock", flock_after_the_holder_left)
    with module.folder_lock(tmp_path):
        monkeypatch.setattr(module.fcntl, "flock", real_flock)
        assert len(calls) == 2  # it tried again, on the new file
        assert module.is_locked(tmp_path)
    assert not module.is_locked(tmp_path) and not module.lock_path(tmp_path).exists()


def test_a_forced_run_sets_the_old_results_aside_under_the_lock(tmp_path, monkeypatch):
    """Two ``--force`` runs into one folder must not both move it aside: the lock lies
    beside the folder and is held from the checks to the end, the set-aside included."""
    from neuroeq.protocols import result_folder, runner
    from neuroeq.protocols.folder_lock import is_locked, lock_path

    quick = load_protocol(TINY_TRAIN, ["training.epochs=1", "outputs.figures=false",
                                       "outputs.state_samples=0"])
    out = run_protocol(quick, tmp_path / "run", progress=False)
    seen = []

    def set_aside(folder):
        seen.append(is_locked(folder))  # another open of the lock file would be refused
        return result_folder.set_aside(folder)

    monkeypatch.setattr(runner, "set_aside", set_aside)
    run_protocol(quick, out, force=True, progress=False)
    assert seen == [True]
    assert lock_path(out).parent == out.parent and not lock_path(out).exists()
    assert not out.with_name("run.previous").exists()


QUICK = ["training.epochs=1", "outputs.figures=false", "outputs.state_samples=0"]


def test_a_linked_result_folder_is_replaced_through_its_link(tmp_path):
    """--force into a link to a result folder replaces the folder it points to (the link
    stays a link, and both paths share one lock); a link to nothing is named."""
    from neuroeq.protocols.folder_lock import lock_path

    quick = load_protocol(TINY_TRAIN, QUICK)
    real = run_protocol(quick, tmp_path / "real", progress=False)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert lock_path(link) == lock_path(real)
    first = (real / "metrics.nc").read_bytes()
    again = load_protocol(TINY_TRAIN, QUICK + ["network.seed=2"])
    for _ in range(2):  # (a second --force once failed at the set-aside of the link)
        assert run_protocol(again, link, force=True, progress=False) == real
    assert link.is_symlink() and (real / "DONE").is_file()
    assert (real / "metrics.nc").read_bytes() != first
    assert not any(p.name.endswith(".previous") for p in tmp_path.iterdir())
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a link to .*nowhere', which does not exist"):
        run_protocol(quick, dangling, progress=False)


def test_a_resumed_run_finishes_what_an_interrupted_force_run_replaced(tmp_path, monkeypatch):
    """A --force run killed after it set the old results aside leaves NAME.previous: a
    plain run's refusal names it, and a --resume that completes the new run removes it."""
    from neuroeq.protocols import runner

    out = run_protocol(load_protocol(TINY_TRAIN, QUICK), tmp_path / "run", progress=False)
    longer = load_protocol(TINY_TRAIN, ["training.epochs=2", "outputs.figures=false",
                                        "outputs.state_samples=0"])
    real_run_in = runner._run_in

    def interrupted(protocol, folder, previous, **options):  # Ctrl+C after epoch 1
        real_run_in(load_protocol(TINY_TRAIN, QUICK), folder, None, **options)
        (folder / "DONE").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_run_in", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(longer, out, force=True, progress=False)
    monkeypatch.setattr(runner, "_run_in", real_run_in)
    kept = tmp_path / "run.previous"
    assert (kept / "DONE").is_file()
    with pytest.raises(ConfigError, match=r"interrupted --force run was to replace are in "
                                          r"'.*run\.previous'"):
        run_protocol(longer, out, progress=False)
    run_protocol(longer, out, resume=True, progress=False)  # epoch 2 from the checkpoint
    assert (out / "DONE").is_file() and not kept.exists()
    assert xr.open_dataset(out / "metrics.nc").sizes["epoch"] == 2


def test_only_the_force_run_that_set_results_aside_removes_them(tmp_path):
    """A --force run that fails before writing a result leaves a folder another run may
    take: that plain run names NAME.previous, and neither it nor its --resume removes it
    (they are not the run that was to replace those results), nor does a --force before
    it is done (it is refused until one of the two folders is moved)."""
    out = run_protocol(load_protocol(TINY_TRAIN, QUICK), tmp_path / "run", progress=False)
    original = (out / "metrics.nc").read_bytes()
    broken = load_protocol(TINY_TRAIN, QUICK + ["network.sizes=[64,8,9]"])
    with pytest.raises(ConfigError):
        run_protocol(broken, out, force=True, progress=False)
    kept = tmp_path / "run.previous"
    with pytest.warns(RuntimeWarning, match=r"interrupted --force run was to replace stay "
                                            r"in '.*run\.previous'"):
        run_protocol(load_protocol(TINY_TRAIN, QUICK), out, progress=False)
    assert "stay in" in (out / "log.txt").read_text()
    longer = load_protocol(TINY_TRAIN, ["training.epochs=2", "outputs.figures=false",
                                        "outputs.state_samples=0"])
    with pytest.warns(RuntimeWarning, match="stay in"):
        run_protocol(longer, out, resume=True, progress=False)
    assert (kept / "metrics.nc").read_bytes() == original
    assert xr.open_dataset(out / "metrics.nc").sizes["epoch"] == 2
    # a --force would have to discard the kept results before it is done: refused
    with pytest.raises(ConfigError, match="would have to discard one of them"):
        run_protocol(longer, out, force=True, progress=False)
    assert (kept / "metrics.nc").read_bytes() == original
    shutil.rmtree(kept)  # the user's choice
    run_protocol(longer, out, force=True, progress=False)  # a completed --force: it goes
    assert not kept.exists() and not (out / "REPLACES").exists()


def test_an_interrupted_run_says_where_the_old_results_are(tmp_path, monkeypatch, capsys):
    from neuroeq.protocols import runner

    protocol = tmp_path / "tiny.toml"
    protocol.write_text(load_protocol(TINY_TRAIN, QUICK).to_toml())
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0

    def interrupted(*args, **options):
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.RUNNERS, "train", interrupted)
    assert main(["run", str(protocol), "--out", str(out), "--force", "--quiet"]) == 130
    message = capsys.readouterr().err
    assert "interrupted; the results this run was to replace are kept in" in message
    assert "failed: KeyboardInterrupt" in (out / "log.txt").read_text()


def test_a_result_folder_under_a_folder_without_write_access_is_named(tmp_path, monkeypatch):
    from neuroeq.protocols import folder_lock

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(folder_lock.os, "open", refused)
    with pytest.raises(ConfigError, match=r"cannot make the run lock '.*\.run\.lock' beside "
                                          r"the result folder \(Permission denied\)"):
        run_protocol(load_protocol(TINY_TRAIN, QUICK), tmp_path / "run", progress=False)


def test_a_netcdf_library_error_becomes_an_os_error_naming_the_file(tmp_path, monkeypatch):
    from neuroeq.io import write_netcdf

    def full_disk(self, path, *args, **kwargs):
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    with pytest.raises(OSError, match=r"writing NetCDF failed \(NetCDF: HDF error; is the "
                                      r"disk full\?\)") as error:
        write_netcdf(xr.Dataset({"a": ("x", [1.0])}), tmp_path / "a.nc")
    assert error.value.filename == str(tmp_path / "a.nc")
    assert list(tmp_path.iterdir()) == []


def test_a_result_folder_named_through_dot_dot_is_replaced_in_place(tmp_path, monkeypatch):
    """``y/../y`` names ``y``: --force sets ``y`` aside and writes a new ``y`` (it once
    failed to make ``y/../y`` once ``y`` had moved)."""
    monkeypatch.chdir(tmp_path)
    quick = load_protocol(TINY_TRAIN, QUICK)
    first = run_protocol(quick, Path("x/../y"), progress=False)
    assert first == tmp_path / "y" and (first / "DONE").is_file()
    assert run_protocol(quick, Path("y/../y"), force=True, progress=False) == first
    assert (first / "DONE").is_file() and not (tmp_path / "y.previous").exists()


def test_a_result_folder_named_like_a_set_aside_one_is_refused(tmp_path):
    # a protocol "a.previous" would be taken for (and removed as) what --force of "a" set aside
    with pytest.raises(ConfigError, match=r"ends in '\.previous', the name a --force run "
                                          "gives the results it sets aside"):
        run_protocol(load_protocol(TINY_TRAIN, QUICK), tmp_path / "a.previous",
                     progress=False)
    assert not (tmp_path / "a.previous").exists()
