"""Text the locale cannot decode: under ``LC_ALL=C`` without UTF-8 mode an ``é`` typed in a
UTF-8 terminal reaches Python as lone surrogates (so does a Latin-1 byte under any UTF-8
locale). Runs with such result folders and ``--set`` values complete; the text files they
write are UTF-8 and hold the text the bytes spell; NetCDF files land in such folders."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import xarray as xr

from neuroeq.errors import ConfigError
from neuroeq.io import read_netcdf, utf8_text, write_netcdf, write_text
from neuroeq.protocols import load_protocol
from neuroeq.protocols.result_folder import written_by_a_run

GRADCHECK = ('[protocol]\nname = "g"\nkind = "gradcheck"\n[gradcheck]\n'
             'models = ["hopfield_smooth"]\ncouplings = ["symmetric"]\nsizes = [3, 4, 2]\n'
             'rules = ["ep"]\nbetas = [1e-2, 1e-3]\nseeds = [0]\nbatch = 1\n'
             '[outputs]\ndpi = 30\n')
TRAIN = ('[protocol]\nname = "tiny"\nkind = "train"\n[model]\nname = "hopfield"\n'
         '[network]\nsizes = [64, 16, 10]\nseed = 1\n'
         '[engine]\nfree_steps = 15\nnudged_steps = 5\ntol = 0.0\n'
         '[rule]\nname = "centered"\nbeta = 0.5\n[data]\nname = "digits"\n'
         '[training]\nepochs = 1\nbatch_size = 32\nlr = 0.2\nlimit_train = 20\n'
         'limit_test = 10\n[outputs]\nstate_samples = 2\ntrace_chunk = 5\nfigures = false\n')
E = "é".encode()  # as a UTF-8 terminal sends it


def _name(data: bytes) -> str:
    """The name of the file ``data`` as this process reads it."""
    return os.fsdecode(data)


def _locale(utf8: bool) -> dict[str, str]:
    """The environment of a run under ``LC_ALL=C``: without UTF-8 mode (ASCII: an ``é`` in
    the arguments is undecodable) or with it (UTF-8: a Latin-1 byte is)."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("LC_") and key not in ("PYTHONIOENCODING", "LANG")}
    return {**environment, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "1" if utf8 else "0"}


def _neuroeq(cwd: Path, *arguments: bytes, utf8: bool = False
             ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "neuroeq", *arguments], cwd=cwd,
                          capture_output=True, env=_locale(utf8), timeout=300)


def _stderr(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode("utf-8", "backslashreplace")[-3000:]


def _temporaries(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob(".*")]


def test_a_run_under_the_c_locale_writes_an_undecodable_folder_and_description(tmp_path):
    (tmp_path / "g.toml").write_text(GRADCHECK)
    done = _neuroeq(tmp_path, b"run", b"g.toml", b"--out", b"r" + E + b"/sub",
                    b"--set", b"protocol.description=" + E + b"t" + E, b"--quiet")
    assert done.returncode == 0, _stderr(done)
    assert "Logging error" not in _stderr(done)
    out = tmp_path / _name(b"r" + E) / "sub"  # the folder of the bytes typed
    assert sorted(path.name for path in out.iterdir()) == [
        "DONE", "figures", "gradcheck.nc", "log.txt", "protocol.toml", "table.md"]
    assert [path.name for path in (out / "figures").iterdir()] == [
        "alignment_hopfield_smooth_symmetric.png"]
    assert _temporaries(out) == []
    saved = (out / "protocol.toml").read_bytes().decode("utf-8")
    assert tomllib.loads(saved)["protocol"]["description"] == "été"
    assert load_protocol(out / "protocol.toml").config["protocol"]["description"] == "été"
    assert "INFO protocol g (kind gradcheck) from g.toml" in (
        out / "log.txt").read_bytes().decode("utf-8")
    with xr.open_dataset(out / "gradcheck.nc") as dataset:
        assert float(dataset.cosine.min()) > 0.999


@pytest.mark.slow  # two training runs in subprocesses
def test_a_training_run_under_the_c_locale_keeps_its_data_root_and_resumes(tmp_path):
    (tmp_path / "t.toml").write_text(TRAIN)
    (tmp_path / _name(b"donn" + E + b"es")).mkdir()
    arguments = (b"run", b"t.toml", b"--out", b"r" + E, b"--set",
                 b"data.root=donn" + E + b"es", b"--set", b"protocol.description=" + E,
                 b"--quiet")
    done = _neuroeq(tmp_path, *arguments)
    assert done.returncode == 0, _stderr(done)
    out = tmp_path / _name(b"r" + E)
    for name in ("DONE", "metrics.nc", "weight_changes.nc", "states.nc", "checkpoint.pt"):
        assert (out / name).is_file(), name
    saved = tomllib.loads((out / "protocol.toml").read_bytes().decode("utf-8"))
    assert saved["data"]["root"] == "données" and saved["protocol"]["description"] == "é"
    assert "is not read" in _stderr(done)  # (the digits task is built in)
    done = _neuroeq(tmp_path, *arguments, b"--resume", b"--set", b"training.epochs=2")
    assert done.returncode == 0, _stderr(done)
    assert list(read_netcdf(out / "metrics.nc").epoch.values) == [1, 2]
    assert "epoch 2" in (out / "log.txt").read_bytes().decode("utf-8")
    assert _temporaries(out) == []


def test_bytes_that_are_not_utf8_are_refused_in_a_setting_and_escaped_in_a_path(tmp_path):
    """A Latin-1 byte (under a UTF-8 locale): a protocol value is UTF-8 text, refused with
    the byte named; a result folder or protocol file of such a name works, and the text
    files name it with ``\\xe9`` (they stay UTF-8: the folder is a run's own again)."""
    folder = tmp_path / _name(b"p\xe9")
    folder.mkdir()
    (folder / "g.toml").write_text(GRADCHECK.replace("dpi = 30", "figures = false"))
    done = _neuroeq(tmp_path, b"run", b"p\xe9/g.toml", b"--out", b"x", b"--set",
                    b"protocol.description=\xe9t\xe9", utf8=True)
    assert done.returncode == 2
    assert _stderr(done).startswith("neuroeq: error: p\\udce9/g.toml (with protocol."
                                    "description='\\udce9t\\udce9'): protocol.description is "
                                    "not UTF-8 text: it holds the bytes 0xe9 0xe9, which UTF-8 "
                                    "does not decode")
    assert not (tmp_path / "x").exists()
    done = _neuroeq(tmp_path, b"run", b"p\xe9/g.toml", b"--out", b"r\xe9", b"--quiet",
                    utf8=True)
    assert done.returncode == 0, _stderr(done)
    out = tmp_path / _name(b"r\xe9")
    assert (out / "gradcheck.nc").is_file() and _temporaries(out) == []
    header = (out / "protocol.toml").read_bytes().decode("utf-8").splitlines()[0]
    assert header == "# resolved from p\\xe9/g.toml"
    assert written_by_a_run(out)
    assert load_protocol(out / "protocol.toml").name == "g"
    assert "from p\\xe9/g.toml" in (out / "log.txt").read_bytes().decode("utf-8")


def test_netcdf_files_are_written_and_read_in_a_folder_the_locale_cannot_encode(tmp_path):
    script = ("import sys, xarray as xr\n"
              "from neuroeq.io import read_netcdf, write_netcdf\n"
              "folder, name = sys.argv[1:]\n"
              "write_netcdf(xr.Dataset({'a': ('x', [1.0, 2.0])}, attrs={'from': folder}),"
              " f'{folder}/{name}')\n"
              "dataset = read_netcdf(f'{folder}/{name}')\n"
              "assert list(dataset.a.values) == [1.0, 2.0], dataset\n"
              "print(ascii(dataset.attrs['from']))\n")
    done = subprocess.run([sys.executable, "-c", script, b"r" + E, b"r" + E + b"sum" + E + b".nc"],
                          cwd=tmp_path, capture_output=True, env=_locale(False), timeout=120)
    assert done.returncode == 0, _stderr(done)
    assert done.stdout.strip() == b"'r\\xe9'"  # the attribute as the text the bytes spell
    assert [path.name for path in (tmp_path / _name(b"r" + E)).iterdir()] == [
        _name(b"r" + E + b"sum" + E + b".nc")]


def test_undecodable_text_is_written_as_the_utf8_text_its_bytes_spell(tmp_path):
    assert utf8_text("r\udcc3\udca9sum\udcc3\udca9") == "résumé"
    assert utf8_text("é\udce9") == "é\\xe9"  # a Latin-1 byte
    assert utf8_text("a\ud800") == "a\\ud800"  # a surrogate no byte stands for
    assert utf8_text("α β") == "α β"
    write_text(tmp_path / "a.md", "r\udcc3\udca9 \udce9")
    assert (tmp_path / "a.md").read_bytes() == "ré \\xe9".encode()
    dataset = xr.Dataset({"a": ("x", [1.0], {"units": "\udcc3\udca9"})},
                         attrs={"source": "r\udcc3\udca9", "n": 3})
    write_netcdf(dataset, tmp_path / "a.nc")
    assert dataset.attrs["source"] == "r\udcc3\udca9"  # the dataset itself is left as it was
    assert dataset.a.attrs["units"] == "\udcc3\udca9"
    with xr.open_dataset(tmp_path / "a.nc") as written:
        assert written.attrs["source"] == "ré" and written.attrs["n"] == 3
        assert written.a.attrs["units"] == "é"


def test_a_protocol_file_that_is_not_utf8_is_named_with_its_byte(tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(b'[protocol]\nname = "p"\ndescription = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"p.toml' is not a UTF-8 text file \(byte 0xe9 on "
                                          r"line 3 is not UTF-8\)"):
        load_protocol(path)
