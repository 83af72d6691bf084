"""Output files of the commands: a folder this user may not write to is refused before any
work; a write that fails anyway names the file asked for (never its temporary) and spares
the other outputs; text is UTF-8 whatever the locale."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import xarray as xr

from neuroeq.cli import command_line, main
from neuroeq.io import write_bytes, write_netcdf, write_outputs, write_text

GRADCHECK = ["gradcheck", "--sizes", "4,3,2", "--rules", "ep", "--batch", "1"]
COMMANDS = {"gradcheck": [*GRADCHECK, "--out"],
            "classify": ["classify", "fhn", "--grid", "b=1", "--out"],
            "gibbscheck": ["gibbscheck", "--chains", "10", "--markdown"]}


def _no_write_access(monkeypatch, folder: Path) -> None:
    """``os.access`` says no to writing in ``folder`` (tests may run as root, to whom the
    real one says yes everywhere)."""
    real = os.access

    def access(path, mode, **options):
        if mode & os.W_OK and Path(path).resolve() == folder.resolve():
            return False
        return real(path, mode, **options)

    monkeypatch.setattr(os, "access", access)


def _temporaries_refused(monkeypatch, folder: Path) -> None:
    """Making a file in ``folder`` fails as it does where this user has no permission."""
    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, **options):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            name = os.path.join(dir, f"{prefix}negod5br{suffix}")
            raise PermissionError(13, "Permission denied", name)
        return real(suffix=suffix, prefix=prefix, dir=dir, **options)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("below", ["", "new/sub/"])
def test_an_output_folder_without_write_access_is_refused_before_any_work(
        tmp_path, capsys, monkeypatch, command, below):
    locked = tmp_path / "locked"
    locked.mkdir()
    _no_write_access(monkeypatch, locked)
    target = f"{locked}/{below}x.out"
    assert main([*COMMANDS[command], target]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"neuroeq: error: cannot write '{target}': no permission to "
                            f"create files in the folder '{locked}'\n")
    assert not captured.out  # nothing was computed
    assert list(locked.iterdir()) == []


def _without_root_privileges() -> list[str]:
    """A command prefix under which folder permissions hold: none for a user, ``setpriv``
    without the capabilities that let root write anywhere (skips where it cannot)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
              "--"]
    if shutil.which("setpriv") is None or subprocess.run(
            [*prefix, "true"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop root's file capabilities")
    return prefix


def test_a_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    command = [*_without_root_privileges(), sys.executable, "-m", "neuroeq", *GRADCHECK,
               "--out", f"{locked}/g.nc", "--markdown", str(tmp_path / "g.md")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"neuroeq: error: cannot write '{locked}/g.nc': no permission "
                             f"to create files in the folder '{locked}'\n")
    assert not result.stdout and not (tmp_path / "g.md").exists()


def test_a_failed_write_names_the_file_and_the_other_output_is_written(
        tmp_path, capsys, monkeypatch):
    locked, table = tmp_path / "locked", tmp_path / "g.md"
    locked.mkdir()
    _temporaries_refused(monkeypatch, locked)
    assert main([*GRADCHECK, "--out", f"{locked}/g.nc", "--markdown", str(table)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (f"neuroeq: error: cannot write '{locked}/g.nc': "
                                             "Permission denied")
    assert ".tmp" not in captured.err
    assert f"wrote {table}" in captured.out and "wrote " + str(locked) not in captured.out
    assert "| ep |" in table.read_text(encoding="utf-8")


def test_two_failed_writes_are_both_named(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _temporaries_refused(monkeypatch, locked)
    assert main([*GRADCHECK, "--out", f"{locked}/g.nc", "--markdown", f"{locked}/g.md"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"neuroeq: error: cannot write '{locked}/g.nc': Permission denied; "
        f"cannot write '{locked}/g.md': Permission denied")


@pytest.mark.parametrize("write", [
    lambda path: write_text(path, "text"), lambda path: write_bytes(path, b"bytes"),
    lambda path: write_netcdf(xr.Dataset({"a": ("x", [1.0])}), path)])
def test_the_atomic_writers_name_the_target_not_their_temporary(tmp_path, monkeypatch,
                                                               write):
    _temporaries_refused(monkeypatch, tmp_path)
    with pytest.raises(PermissionError) as error:
        write(tmp_path / "a.out")
    assert str(error.value) == f"[Errno 13] cannot write '{tmp_path}/a.out': Permission denied"
    monkeypatch.undo()
    folder = tmp_path / "folder"  # appeared after the check: the rename onto it fails
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(OSError, match=rf"^\[Errno \d+\] cannot write '{folder}': "):
        write(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no temporary left


def test_write_outputs_writes_the_rest_after_a_failure(tmp_path):
    def refused(path):
        raise PermissionError(13, "cannot write 'a': Permission denied")

    reports = []
    with pytest.raises(PermissionError, match="cannot write 'a'"):
        write_outputs({tmp_path / "a": refused,
                       tmp_path / "b": lambda path: write_text(path, "b")}, reports.append)
    assert reports == [f"wrote {tmp_path / 'b'}"]
    assert (tmp_path / "b").read_text(encoding="utf-8") == "b"


def _c_locale() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("LC_", "PYTHONIOENCODING"))}
    return {**environment, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}


def test_text_is_written_as_utf8_under_the_c_locale(tmp_path):
    script = ("import sys; from neuroeq.io import write_text; "
              "write_text(sys.argv[1], '\\u03b1 \\u03b2')")  # an ASCII command line
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.md")], check=True,
                   env=_c_locale(), timeout=120)
    assert (tmp_path / "a.md").read_bytes() == "α β".encode()


def test_gradcheck_writes_its_greek_table_under_the_c_locale(tmp_path):
    table = tmp_path / "g.md"
    result = subprocess.run([sys.executable, "-m", "neuroeq", *GRADCHECK, "--markdown",
                             str(table)], capture_output=True, env=_c_locale(), timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert "| model | coupling | α | rule | β |" in table.read_bytes().decode("utf-8")


def test_the_command_line_in_a_report_reads_undecodable_arguments_as_utf8():
    undecoded = "r\udcc3\udca9sum\udcc3\udca9.md"  # résumé.md read under LC_ALL=C
    assert command_line(["gradcheck", "--markdown", undecoded]) == (
        "neuroeq gradcheck --markdown 'résumé.md'")
    assert command_line(["gradcheck", "--markdown", "a b.md"]) == (
        "neuroeq gradcheck --markdown 'a b.md'")
