"""``neuroeq sweep`` on a real Dask LocalCluster with two workers: the combined dataset has
the sweep dimensions, failed points are reported without losing the others, and a re-run
skips finished points."""

import re

import pytest
import xarray as xr

from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.protocols import load_protocol
from neuroeq.protocols.sweep import combine_points, run_sweep
from neuroeq.protocols.sweep_file import load_sweep

pytestmark = [pytest.mark.dask, pytest.mark.slow]

SWEEP = """
[sweep]
name = "tiny_sweep"
[sweep.grid]
"training.lr" = [0.3, -1.0]
"network.seed" = [0, 1]

[protocol]
name = "point"
kind = "train"
[model]
name = "hopfield"
[network]
sizes = [64, 8, 10]
[engine]
free_steps = 8
nudged_steps = 3
tol = 0.0
[rule]
name = "centered"
[training]
epochs = 2
batch_size = 20
limit_train = 200
limit_test = 60
[outputs]
figures = false
state_samples = 0
"""


def test_sweep_on_a_local_cluster(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    assert len(sweep.points()) == 4
    messages = []
    with pytest.raises(ConfigError, match="threads must be a whole number of at least 1"):
        run_sweep(sweep, tmp_path / "out", workers=2, threads=0)
    # each point runs with the torch threads asked for (a LocalCluster's workers have one)
    dataset = run_sweep(sweep, tmp_path / "out", workers=2, threads=2,
                        progress=messages.append)
    written = sorted((tmp_path / "out" / "points").glob("*/metrics.nc"))
    assert len(written) == 2  # the two points with a valid lr
    assert all(xr.open_dataset(path).attrs["torch_threads"] == 2 for path in written)
    assert dict(dataset.status.sizes) == {"lr": 2, "seed": 2}
    assert set(dataset.test_accuracy.dims) == {"lr", "seed", "epoch"}
    done = dataset.sel(lr=0.3)
    assert (done.status == "done").all()
    assert (done.train_loss.sel(epoch=2) < done.train_loss.sel(epoch=1)).all()
    assert (done.test_accuracy > 0).all()
    failed = dataset.sel(lr=-1.0)
    assert (failed.status == "failed").all()
    assert "[training].lr must be at least 0" in str(failed.error.values[0])
    assert failed.test_accuracy.isnull().all()
    # seeds give different networks, hence different numbers
    assert float(done.train_loss.sel(seed=0, epoch=1)) != float(done.train_loss.sel(seed=1,
                                                                                    epoch=1))
    saved = xr.open_dataset(tmp_path / "out" / "sweep.nc")
    assert saved.test_accuracy.sizes == dataset.test_accuracy.sizes
    failures = (tmp_path / "out" / "failures.txt").read_text().splitlines()
    assert len(failures) == 2 and all("[training].lr" in line for line in failures)
    # a re-run skips the two finished points and re-tries the failed ones
    messages.clear()
    again = run_sweep(sweep, tmp_path / "out", workers=2, progress=messages.append)
    assert "2 already done, 2 to run" in messages[0]
    xr.testing.assert_equal(again.test_accuracy, dataset.test_accuracy)
    # the skipped points keep the time they took (read back from their done markers)
    assert (again.seconds.sel(lr=0.3) > 0).all()


def test_sweep_cli_rejects_bad_grids(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\ngrid = {"epochs" = [1, 2]}\n[protocol]\nname = "x"\n'
                    'kind = "gradcheck"\n')
    assert main(["sweep", str(path)]) == 2
    assert "must be section.key" in capsys.readouterr().err


@pytest.mark.parametrize("key, message", [
    ("rule.betta", r"unknown key \[rule\]\.betta \(did you mean 'beta'\?\); known: name, "
                   "beta"),
    ("snn.epochs", r"a 'train' protocol has no \[snn\] section; it reads \[protocol\]"),
    ("traning.epochs", r"no \[traning\] section \(did you mean 'training'\?\)"),
    # a key that another rule reads: every point would be refused
    ("rule.temperature", r"every point of \[sweep.grid\] is an invalid protocol, so every "
                         r"point would fail; the first, p0000_lr-0.3_temperature-1: .*"
                         r"\[rule\].temperature applies to rule finite_nudge or "
                         r"path_integral, not 'centered'"),
    ("model.parameters.a", r"model 'hopfield' has no parameter 'a'; its parameters: tau"),
    ("model.parameters.tau.x", r"must be model\.parameters\.NAME"),
    ("rule.beta.x", r"must be section\.key \(\[rule\]\.beta is not a table\)"),
])
def test_a_grid_key_the_protocol_does_not_read_is_refused_before_any_point_runs(
        tmp_path, key, message):
    """A misspelt key would fail every point: the file is refused when it is loaded (no
    cluster starts, no result folder is made); a bad value still fails its points only."""
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace('"network.seed" = [0, 1]', f'"{key}" = [1, 2]'))
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)
    path.write_text(SWEEP.replace('"network.seed" = [0, 1]', '"model.parameters.tau" = [1]'))
    assert len(load_sweep(path).points()) == 2  # the known parameter of the model passes
    # with the rule in the grid too, the points of the Gibbs rules are valid
    path.write_text(SWEEP.replace('"network.seed" = [0, 1]', '"rule.temperature" = [0.1]\n'
                                  '"rule.name" = ["centered", "finite_nudge"]'))
    assert len(load_sweep(path).points()) == 4


def test_true_and_1_are_two_grid_values(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace('"network.seed" = [0, 1]', '"network.lateral" = [true, 1]'))
    assert len(load_sweep(path).points()) == 4  # (1 then fails its own points)
    path.write_text(SWEEP.replace('"network.seed" = [0, 1]', '"rule.beta" = [1, 1.0]'))
    with pytest.raises(ConfigError, match=r"rule\.beta lists 1\.0 more than once"):
        load_sweep(path)  # one setting: the same run twice


def test_a_model_parameter_in_the_grid_of_a_kind_without_a_model_is_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\n[sweep.grid]\n"model.parameters.a" = [0.0, 0.1]\n'
                    '[protocol]\nname = "g"\nkind = "gradcheck"\n')
    with pytest.raises(ConfigError, match=r"a 'gradcheck' protocol has no \[model\] section"):
        load_sweep(path)


def test_a_fixed_value_for_a_grid_key_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    with pytest.raises(ConfigError, match=r"training\.lr is a grid key .* would be ignored"):
        load_sweep(path, ["training.lr=0.1"])
    path.write_text(SWEEP.replace('[sweep.grid]', '[sweep.set]\n"network.seed" = 3\n'
                                                  '[sweep.grid]'))
    with pytest.raises(ConfigError, match=r"network\.seed is a grid key"):
        load_sweep(path)
    path.write_text(SWEEP.replace('[sweep.grid]', '[sweep.set]\n"training.epochs" = -3\n'
                                                  '[sweep.grid]'))
    with pytest.raises(ConfigError, match=r"s\.toml: its base protocol \(with "
                                          r"training\.epochs=-3\): \[training\]\.epochs must "
                                          "be positive"):
        load_sweep(path)


def test_finished_points_of_other_settings_are_not_replaced_without_force(tmp_path):
    """The sweep file changed since its points ran (here the epochs, as a --set would):
    the sweep is refused before a cluster starts and the finished point is untouched."""
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    point = sweep.points()[0]
    folder = tmp_path / "out" / "points" / point.name
    folder.mkdir(parents=True)
    earlier = load_protocol(point.config, ["training.epochs=3"]).to_toml()
    (folder / "protocol.toml").write_text("# resolved from an earlier sweep\n" + earlier)
    (folder / "DONE").write_text("1.0 s\n")
    with pytest.raises(ConfigError, match=rf"holds 1 finished point\(s\) made with other "
                                          rf"settings \({point.name}: training\.epochs \(3 -> "
                                          r"2\)\); pass --force"):
        run_sweep(sweep, tmp_path / "out")
    assert (folder / "protocol.toml").read_text().endswith(earlier)
    assert not (tmp_path / "out" / "sweep.json").exists()


@pytest.mark.parametrize("name", [".", "..", "../elsewhere", ""])
def test_a_sweep_name_must_be_one_plain_folder_name(tmp_path, name):
    # it names results/NAME, like a protocol's name: ".." would put the points in the parent
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace('name = "tiny_sweep"', f'name = "{name}"'))
    with pytest.raises(ConfigError, match=r"\[sweep\]\.name .* must be a plain folder name"):
        load_sweep(path)


def test_repeated_values_and_grids_too_large_to_count_are_refused_at_load(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace("[0.3, -1.0]", "[0.3, 0.3]"))
    with pytest.raises(ConfigError, match=r"\[sweep.grid\]\.training\.lr lists 0\.3 more "
                                          "than once"):
        load_sweep(path)
    # 7,132^5 points: more than int64 holds (a numpy product wrapped around to a small count)
    values = "[" + ", ".join(map(str, range(7132))) + "]"
    keys = ("training.lr", "network.seed", "training.seed", "rule.beta", "engine.tol")
    path.write_text(SWEEP.split("[sweep.grid]")[0] + "[sweep.grid]\n"
                    + "".join(f'"{key}" = {values}\n' for key in keys)
                    + SWEEP.split('"network.seed" = [0, 1]')[1])
    with pytest.raises(ConfigError, match=r"the grid has 18,\d{3},.* points, more than 10,000"):
        load_sweep(path)


def test_list_values_and_names_the_points_use_become_dimensions(tmp_path):
    """``network.sizes`` lists are labelled by their JSON text; ``training.seed`` keeps its
    whole name beside a ``seed`` dimension of the points' datasets; points whose datasets
    do not combine leave a status-only dataset that says why."""
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace('"training.lr" = [0.3, -1.0]\n"network.seed" = [0, 1]',
                                  '"network.sizes" = [[64, 8, 10], [64, 6, 10]]\n'
                                  '"training.seed" = [0, 1]'))
    sweep = load_sweep(path)
    points = sweep.points()
    outcome = {point.name: {"status": "done", "error": "", "seconds": 1.0} for point in points}
    for i, point in enumerate(points):
        (tmp_path / "points" / point.name).mkdir(parents=True)
        xr.Dataset({"loss": ("seed", [float(i)])}, coords={"seed": [7]}).to_netcdf(
            tmp_path / "points" / point.name / "metrics.nc")
    combined = combine_points(sweep, points, tmp_path / "points", outcome)
    assert dict(combined.loss.sizes) == {"sizes": 2, "training_seed": 2, "seed": 1}
    assert list(combined["sizes"].values) == ["[64,8,10]", "[64,6,10]"]
    assert float(combined.loss.sel(sizes="[64,6,10]", training_seed=1, seed=7)) == 3.0
    xr.Dataset({"loss": ("seed", [0.0, 1.0])}).to_netcdf(  # no coordinate: other shape
        tmp_path / "points" / points[0].name / "metrics.nc")
    combined = combine_points(sweep, points, tmp_path / "points", outcome)
    assert "loss" not in combined and (combined.status == "done").all()
    assert "do not combine" in combined.attrs["not_combined"]


def test_one_sweep_at_a_time_writes_to_a_folder(tmp_path):
    from neuroeq.protocols.folder_lock import folder_lock

    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out), pytest.raises(ConfigError, match="another run is writing to"):
        run_sweep(load_sweep(path), out, workers=1)  # refused before a cluster starts
    assert list(out.iterdir()) == []


def test_a_point_folder_written_after_the_sweep_started_is_not_replaced(tmp_path):
    """A run of other settings that a user made in a point's folder while the sweep ran is
    kept (the point fails and says why) unless the sweep has force; the same settings are
    taken as the point's result."""
    from neuroeq.protocols import run_protocol
    from neuroeq.protocols.sweep import run_point

    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    point = load_sweep(path).points()[0]
    folder = tmp_path / "points" / point.name
    other = load_protocol(point.config, ["training.epochs=1"])
    run_protocol(other, folder, progress=False)
    result = run_point(point.config, str(folder))
    assert result["status"] == "failed"
    assert "holds a finished run made with other settings (training.epochs (1 -> 2)" \
        in result["error"] and "pass --force to replace it" in result["error"]
    assert load_protocol(folder / "protocol.toml").config["training"]["epochs"] == 1
    assert run_point(point.config, str(folder), replace=True)["status"] == "done"
    done_at = (folder / "DONE").read_text()
    assert run_point(point.config, str(folder))["status"] == "done"  # the same: kept
    assert (folder / "DONE").read_text() == done_at


# -- the result folder of another sweep ----------------------------------------------------

VALID = SWEEP.replace("[0.3, -1.0]", "[0.3, 0.2]")


def _sweep(tmp_path, text, name="s.toml", overrides=()):
    path = tmp_path / name
    path.write_text(text)
    return load_sweep(path, list(overrides))


def _finish_points(sweep, out):
    """Make every point of ``sweep`` a finished run in ``out/points`` (as if run there):
    run_sweep then skips them all and starts no cluster."""
    from neuroeq.protocols.result_folder import PROTOCOL_HEADER

    for i, point in enumerate(sweep.points()):
        folder = out / "points" / point.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "protocol.toml").write_text(f"{PROTOCOL_HEADER}s.toml\n"
                                              + load_protocol(point.config).to_toml())
        (folder / "DONE").write_text("1.0 s\n")
        xr.Dataset({"loss": ("epoch", [float(i)])}, coords={"epoch": [1]}).to_netcdf(
            folder / "metrics.nc")


def test_a_folder_holding_another_sweeps_results_is_refused_without_force(tmp_path):
    """Another grid into a sweep's folder would write its sweep.json and sweep.nc over the
    first's: refused before anything is written; the sweep itself may run there again,
    and ``force`` runs the other one there (the first's points stay in points/)."""
    import json

    out = tmp_path / "out"
    first = _sweep(tmp_path, VALID)
    _finish_points(first, out)
    run_sweep(first, out)
    written = {name: (out / name).read_bytes() for name in ("sweep.json", "sweep.nc")}
    other = _sweep(tmp_path, VALID.replace('"network.seed" = [0, 1]', '"rule.beta" = [0.1, 1.0]'),
                   "other.toml")
    with pytest.raises(ConfigError, match=rf"result folder '{re.escape(str(out))}' holds the "
                                          r"results of another sweep \(from '.*s\.toml'; its "
                                          r"grid is training\.lr = \[0\.3, 0\.2\]; network\.seed"
                                          r" = \[0, 1\], this sweep's .*rule\.beta = \[0\.1, "
                                          r"1\.0\]\); pass --force"):
        run_sweep(other, out)
    assert {name: (out / name).read_bytes() for name in written} == written
    record = json.loads((out / "sweep.json").read_text())
    assert record["id"] == first.fingerprint() and record["grid"] == first.grid
    messages = []
    run_sweep(first, out, progress=messages.append)  # its own folder: skips its points
    assert "4 already done, 0 to run" in messages[0]
    _finish_points(other, out)
    run_sweep(other, out, force=True)
    assert json.loads((out / "sweep.json").read_text())["id"] == other.fingerprint()
    assert all((out / "points" / point.name / "DONE").is_file() for point in first.points())


def test_another_base_protocol_is_another_sweep(tmp_path):
    out = tmp_path / "out"
    first = _sweep(tmp_path, VALID)
    _finish_points(first, out)
    run_sweep(first, out)
    written = (out / "sweep.json").read_text()
    changed = _sweep(tmp_path, VALID, overrides=["training.epochs=3"])
    with pytest.raises(ConfigError, match=r"holds the results of another sweep \(from .*; its "
                                          r"base protocol differs: training\.epochs \(2 -> 3\)"
                                          r"\); pass --force to run this sweep there"):
        run_sweep(changed, out)
    assert (out / "sweep.json").read_text() == written


def test_a_folder_of_files_no_sweep_wrote_is_refused_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    sweep = _sweep(tmp_path, VALID)
    with pytest.raises(ConfigError, match=rf"result folder '{re.escape(str(out))}' holds files "
                                          r"that no sweep wrote \(notes\.txt\); pass --force "
                                          "to write the sweep into it anyway, or give another "
                                          "--out"):
        run_sweep(sweep, out)
    assert sorted(entry.name for entry in out.iterdir()) == ["notes.txt"]
    _finish_points(sweep, out)
    (out / "points" / "x").mkdir()  # (points/ is a sweep's: only notes.txt is named)
    run_sweep(sweep, out, force=True)
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "sweep.nc").is_file()


def test_a_sweep_json_of_an_earlier_version_is_its_sweeps_and_a_sweep_without_results_is_taken(
        tmp_path):
    """The sweep.json that earlier versions wrote (source, grid, base: no id) names the same
    sweep when its grid and resolved base are this one's; a folder whose sweep finished no
    point holds no results, and another sweep may take it."""
    import json

    from neuroeq.protocols.sweep import _check_sweep_folder

    out = tmp_path / "out"
    sweep = _sweep(tmp_path, VALID)
    _finish_points(sweep, out)
    (out / "sweep.json").write_text(json.dumps({"source": "elsewhere/s.toml",
                                                "grid": sweep.grid, "base": sweep.base}))
    run_sweep(sweep, out)
    assert json.loads((out / "sweep.json").read_text())["id"] == sweep.fingerprint()
    other = _sweep(tmp_path, VALID.replace("[0.3, 0.2]", "[0.1, 0.4]"), "other.toml")
    with pytest.raises(ConfigError, match="holds the results of another sweep"):
        _check_sweep_folder(other, out, force=False)
    for done in (out / "points").glob("*/DONE"):
        done.unlink()  # every point failed: nothing to keep
    _check_sweep_folder(other, out, force=False)  # (running it would start a cluster)


# -- table values and the keys of [sweep.set] and --set -------------------------------------

LR_BASE = VALID.replace('"training.lr" = [0.3, 0.2]', '"rule.beta" = [0.1, 0.5]').replace(
    "epochs = 2", "epochs = 2\nlr = 0.05")
LR_TABLE = {"W1": 0.1, "default": 0.05}


@pytest.mark.parametrize("setting, overrides", [
    ('[sweep.set]\n"training.lr" = {W1 = 0.1, default = 0.05}\n', []),
    ("[sweep.set.training]\nlr = {W1 = 0.1, default = 0.05}\n", []),
    ("[sweep.set]\ntraining.lr = {W1 = 0.1, default = 0.05}\n", []),
    ("", ["training.lr={W1 = 0.1, default = 0.05}"]),
])
def test_a_per_parameter_learning_rate_table_replaces_the_base_rate(tmp_path, setting,
                                                                     overrides):
    """A table set at a setting is its value (the lr of each parameter), not more keys."""
    sweep = _sweep(tmp_path, LR_BASE.replace("[sweep.grid]", setting + "[sweep.grid]"),
                   overrides=overrides)
    assert sweep.base["training"]["lr"] == LR_TABLE
    for point in sweep.points():
        assert load_protocol(point.config).config["training"]["lr"] == LR_TABLE


def test_model_parameters_in_sweep_set_are_set_one_by_one(tmp_path):
    text = LR_BASE.replace("[sweep.grid]", '[sweep.set]\n"model.parameters" = {tau = 0.002}\n'
                                           "[sweep.grid]")
    text = text.replace('name = "hopfield"', 'name = "hopfield"\nparameters = {tau = 0.001}')
    assert _sweep(tmp_path, text).base["model"]["parameters"] == {"tau": 0.002}
    with pytest.raises(ConfigError, match=r"s\.toml: model\.parameters\.tua: model 'hopfield' "
                                          r"has no parameter 'tua' \(did you mean 'tau'\?\); "
                                          r"its parameters: tau"):
        _sweep(tmp_path, text.replace("{tau = 0.002}", "{tua = 0.002}"))


def test_a_grid_of_learning_rate_tables_and_rates_combines(tmp_path):
    """Tables beside numbers along one grid key: every value is labelled by its JSON text
    (one coordinate, one type), so the points' datasets combine."""
    sweep = _sweep(tmp_path, LR_BASE.replace(
        '"rule.beta" = [0.1, 0.5]', '"training.lr" = [{W1 = 0.1, default = 0.05}, 0.05]'))
    points = sweep.points()
    assert [load_protocol(p.config).config["training"]["lr"] for p in points[::2]] == [
        LR_TABLE, 0.05]
    _finish_points(sweep, tmp_path)
    outcome = {point.name: {"status": "done", "error": "", "seconds": 1.0} for point in points}
    combined = combine_points(sweep, points, tmp_path / "points", outcome)
    assert "not_combined" not in combined.attrs
    assert list(combined["lr"].values) == ['{"W1":0.1,"default":0.05}', "0.05"]
    assert float(combined.loss.sel(lr="0.05", seed=1, epoch=1)) == 3.0
    with pytest.raises(ConfigError, match=r"\[sweep\.grid\]\.training\.lr must be a non-empty "
                                          "list of values"):
        _sweep(tmp_path, LR_BASE.replace('"rule.beta" = [0.1, 0.5]',
                                         '"training.lr" = {W1 = [0.1, 0.2]}'))


STOCHASTIC = """
[sweep]
[sweep.grid]
"stochastic.beta" = [0.1, 0.2]
[protocol]
name = "st"
kind = "stochastic"
[model]
name = "hopfield"
"""


@pytest.mark.parametrize("key, value", [("network.dtype", '"float32"'),  # its default
                                        ("network.sizes", "[64, 8, 10]"),
                                        ("network.cost", '"mse"')])
@pytest.mark.parametrize("how", ["set", "--set"])
def test_a_set_of_a_key_the_kind_does_not_read_is_refused_as_for_one_protocol(
        tmp_path, key, value, how):
    """[sweep.set] and --set are a protocol's --set: a key its kind would ignore is refused
    whatever its value, with the single protocol's error, before any point runs."""
    override = f"{key}={value}"
    single = load_protocol(_sweep(tmp_path, STOCHASTIC).base)  # the base alone is valid
    with pytest.raises(ConfigError) as expected:
        load_protocol(single.config, [override])
    error = str(expected.value).split(": ", 1)[1]
    assert error.startswith(f"kind 'stochastic' does not read [{key.replace('.', '].')}")
    if how == "set":
        text = STOCHASTIC.replace("[sweep.grid]", f'[sweep.set]\n"{key}" = {value}\n'
                                                  "[sweep.grid]")
        overrides = []
    else:
        text, overrides = STOCHASTIC, [override]
    with pytest.raises(ConfigError) as raised:
        _sweep(tmp_path, text, overrides=overrides)
    assert str(raised.value).endswith(error)
    assert str(raised.value).startswith(f"{tmp_path / 's.toml'}: its base protocol (with ")


@pytest.mark.parametrize("how", ["set", "--set"])
def test_a_misspelt_key_in_sweep_set_or_set_is_refused(tmp_path, how):
    text = (SWEEP.replace("[sweep.grid]", '[sweep.set]\n"rule.betta" = 0.3\n[sweep.grid]')
            if how == "set" else SWEEP)
    with pytest.raises(ConfigError, match=r"s\.toml: its base protocol \(with rule\.betta=0\.3\)"
                                          r": unknown key \[rule\]\.betta \(did you mean "
                                          "'beta'"):
        _sweep(tmp_path, text, overrides=["rule.betta=0.3"] if how == "--set" else [])


def test_a_grid_key_the_kind_does_not_read_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[sweep\.grid\]\.network\.sizes: a 'stochastic' "
                                          r"protocol does not read \[network\]\.sizes \(only "
                                          "coupling, alpha"):
        _sweep(tmp_path, STOCHASTIC.replace('"stochastic.beta"', '"network.sizes" = [[8, 3]]\n'
                                                                 '"stochastic.beta"'))


def test_a_grid_over_trace_outputs_of_a_kind_that_records_none_is_refused(tmp_path):
    text = STOCHASTIC.replace('"stochastic.beta" = [0.1, 0.2]', '"outputs.trace_chunk" = [5, 20]')
    with pytest.raises(ConfigError, match=r"\[sweep\.grid\]\.outputs\.trace_chunk: a "
                                          r"'stochastic' protocol does not read "
                                          r"\[outputs\]\.trace_chunk \(only figures, dpi; "
                                          r"kind train reads it\)"):
        _sweep(tmp_path, text)


def test_a_grid_over_alpha_of_a_network_without_asymmetric_coupling_is_refused(tmp_path):
    text = SWEEP.replace('"network.seed" = [0, 1]', '"network.alpha" = [0.5, 1.0]')
    with pytest.raises(ConfigError, match=r"\[sweep\.grid\]\.network\.alpha: \[network\]"
                                          r"\.alpha sets the asymmetry of coupling 'asymmetric',"
                                          r" and the base protocol's \[network\]\.coupling = "
                                          "'symmetric' has none"):
        _sweep(tmp_path, text)
    sweep = _sweep(tmp_path, text.replace("[network]\n", '[network]\ncoupling = "asymmetric"\n'))
    assert [point.config["network"]["alpha"] for point in sweep.points()] == [0.5, 1.0] * 2


@pytest.mark.parametrize("address, message", [
    ("notanaddress", "missing port number"), ("foo://x:1", "unknown address scheme 'foo'"),
    ("", "must be a text such as tcp://HOST:8786")])
def test_a_malformed_scheduler_address_is_refused_before_anything_is_written(
        tmp_path, capsys, address, message):
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(VALID)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--scheduler", address, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "neuroeq: error: " in error and message in error and "Traceback" not in error
    assert not out.exists()


def test_a_relative_data_root_reaches_the_points_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = VALID.replace("[outputs]", '[data]\nname = "mnist"\nroot = "data/idx"\n[outputs]')
    sweep = _sweep(tmp_path, text, overrides=())
    roots = {point.config["data"]["root"] for point in sweep.points()}
    assert roots == {str(tmp_path / "data" / "idx")}
    home = _sweep(tmp_path, text.replace('"data/idx"', '"~/idx"'), name="h.toml")
    assert {point.config["data"]["root"] for point in home.points()} == {"~/idx"}


def _finished_point(folder, resolved: str):
    """A point folder holding a finished run whose resolved protocol is ``resolved``."""
    folder.mkdir()
    (folder / "protocol.toml").write_text("# resolved by an earlier version\n" + resolved)
    (folder / "DONE").write_text("1.0 s\n")
    return folder


def test_a_point_an_earlier_version_finished_with_keys_now_dropped_counts_as_done(tmp_path):
    """An earlier version wrote every default into a point's protocol.toml, also keys its
    kind does not read (a gradcheck's [outputs].state_samples): the schema drops them, so
    the point is the same run and a re-run neither repeats nor refuses it."""
    from neuroeq.protocols.sweep import _already_done, _made_otherwise

    config = {"protocol": {"name": "g", "kind": "gradcheck"},
              "gradcheck": {"models": ["hopfield"], "sizes": [3, 4, 2], "rules": ["ep"]}}
    now = load_protocol(config).to_toml()
    earlier = now.replace("[outputs]\n", "[outputs]\nstate_samples = 6\ntrace_chunk = 10\n")
    assert earlier != now
    folder = _finished_point(tmp_path / "point", earlier)
    assert _already_done(config, folder)
    (folder / "protocol.toml").write_text("# other settings\n" + earlier.replace(
        "batch = 4", "batch = 5"))
    assert not _already_done(config, folder)
    assert "batch" in _made_otherwise(config, folder)


def test_a_point_an_earlier_version_finished_with_alpha_on_symmetric_coupling_is_done(
        tmp_path):
    """Earlier versions wrote ``alpha = 1.0`` for every network; with symmetric coupling the
    schema now drops it, and such a finished point is this version's same run."""
    from neuroeq.protocols.sweep import _already_done

    config = {"protocol": {"name": "t", "kind": "train"}, "model": {"name": "hopfield"},
              "network": {"sizes": [64, 8, 10]}, "data": {"name": "digits"},
              "rule": {"name": "ep"}}
    now = load_protocol(config).to_toml()
    earlier = now.replace('coupling = "symmetric"\n', 'coupling = "symmetric"\nalpha = 1.0\n')
    assert earlier != now
    folder = _finished_point(tmp_path / "point", earlier)
    assert _already_done(config, folder)
