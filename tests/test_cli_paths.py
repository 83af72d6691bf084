"""Two paths of one command that name the same file (the NetCDF and the Markdown report,
an input model file and the output) are refused before any work, whatever their spelling."""

import os

import pytest

from neuroeq.checks import distinct_paths
from neuroeq.cli import main
from neuroeq.errors import ConfigError
from tests.conftest import REPO

GRADCHECK = ["gradcheck", "--sizes", "3,3,2", "--rules", "centered", "--batch", "1"]


def test_distinct_paths_compares_resolved_paths(tmp_path):
    distinct_paths({"--out": tmp_path / "a.nc", "--markdown": tmp_path / "a.md",
                    "--plot": None})
    distinct_paths({"--out": None, "--markdown": None})
    same = f"{tmp_path}/sub/../a.nc"
    with pytest.raises(ConfigError, match=r"--out and --markdown name the same file "
                                          rf"'{same}'; give each its own path"):
        distinct_paths({"--out": tmp_path / "a.nc", "--markdown": same})
    (tmp_path / "a.nc").write_text("x")
    os.symlink(tmp_path / "a.nc", tmp_path / "link.nc")
    os.link(tmp_path / "a.nc", tmp_path / "hard.nc")
    for other in ("link.nc", "hard.nc"):
        with pytest.raises(ConfigError, match="name the same file"):
            distinct_paths({"--out": tmp_path / "a.nc", "--markdown": tmp_path / other})


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_gradcheck_refuses_one_path_for_the_dataset_and_the_report(tmp_path, capsys,
                                                                   monkeypatch, force):
    monkeypatch.chdir(tmp_path)
    code = main([*GRADCHECK, "--out", "report", "--markdown", f"{tmp_path}/report", *force])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"neuroeq: error: --out and --markdown name the same file "
                                    f"'{tmp_path}/report'; give each its own path (one would "
                                    "overwrite the other)")
    assert "gradcheck:" not in captured.err and not captured.out  # nothing was computed
    assert not (tmp_path / "report").exists()


def test_gradcheck_leaves_an_existing_file_named_twice_untouched(tmp_path, capsys):
    kept = tmp_path / "check.nc"
    kept.write_text("earlier results")
    assert main([*GRADCHECK, "--out", str(kept), "--markdown", str(kept), "--force"]) == 2
    assert "name the same file" in capsys.readouterr().err
    assert kept.read_text() == "earlier results"


def test_classify_refuses_to_write_its_scan_over_the_model_file(tmp_path, capsys):
    model = tmp_path / "fhn.toml"
    model.write_text((REPO / "models" / "fhn.toml").read_text())
    before = model.read_text()
    assert main(["classify", str(model), "--grid", "eps=1,6", "--out",
                 f"{tmp_path}/./fhn.toml", "--force"]) == 2
    assert "the model file and --out name the same file" in capsys.readouterr().err
    assert model.read_text() == before
