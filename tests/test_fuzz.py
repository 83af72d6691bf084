"""Hostile input: malformed protocol and model files end with one error line and exit status
2 (or load, when they happen to be valid), never with a traceback; loading never runs code
from a file; checkpoints are read without unpickling code.

The generators live in ``tests/fuzz_inputs.py``; ``bench/fuzz.py`` runs them much longer.
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from neuroeq.cli import main
from neuroeq.errors import ConfigError, ModelError
from neuroeq.neuron_model import load_model, model_from_dict
from neuroeq.protocols import load_protocol
from neuroeq.training.checkpoint import load_checkpoint
from tests.fuzz_inputs import (
    BASE_MODEL,
    BASE_PROTOCOL,
    INJECTIONS,
    _dump,
    check_model_file,
    check_protocol_file,
    model_files,
    protocol_files,
)

PACKAGE = Path(__file__).resolve().parents[1] / "neuroeq"
FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _marker(workdir: Path) -> Path:
    return workdir / "INJECTED"


@pytest.mark.parametrize("strategy, check, examples", [
    (protocol_files, check_protocol_file, 200),
    (model_files, check_model_file, 150),
], ids=["protocol", "model"])
def test_hostile_files(strategy, check, examples, workdir):
    marker = _marker(workdir)
    outcomes: dict[str, int] = {}

    @settings(FUZZ, max_examples=examples)
    @given(strategy(str(marker)))
    def run(content: bytes) -> None:
        outcome = check(content, workdir)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert not marker.exists()

    run()
    assert sum(outcomes.values()) >= 0.75 * examples
    assert outcomes.get("rejected", 0) > 0


def _strings_replaced(value, text: str):
    if isinstance(value, dict):
        return {k: _strings_replaced(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings_replaced(v, text) for v in value]
    return text if isinstance(value, str) else value


@pytest.mark.parametrize("injection", INJECTIONS)
def test_code_in_every_string_field_is_never_executed(injection, workdir):
    marker = workdir / "injected_by_string"
    code = injection.format(marker=marker)
    protocol = _strings_replaced(copy.deepcopy(BASE_PROTOCOL), code)
    protocol["model"]["name"] = str(workdir / "hostile_model.toml")
    model = _strings_replaced(copy.deepcopy(BASE_MODEL), code)
    model["equations"] = f"dv/dt = {code} : 1\ndw/dt = -w/tau : {code}"
    (workdir / "hostile_model.toml").write_bytes(_dump(model))
    assert check_model_file(_dump(model), workdir) == "rejected"
    assert check_protocol_file(_dump(protocol), workdir) == "rejected"
    with pytest.raises(ConfigError):
        load_protocol({**copy.deepcopy(BASE_PROTOCOL), "rule": {"name": code}})
    assert not marker.exists()


@pytest.mark.parametrize("template", [
    "tanh(\"__import__('pathlib').Path('{marker}').touch()\")",
    "exec(\"open('{marker}', 'w').close()\")",
    "v + sin('__import__(\\'pathlib\\').Path(\\'{marker}\\').touch()')",
])
def test_string_arguments_never_reach_sympy(template, tmp_path):
    """sympy evaluates string arguments of functions; Brian2's parser passes them on."""
    marker = tmp_path / "by_sympy"
    code = template.format(marker=marker)
    for field in ("rho", "rho_prime", "energy"):
        with pytest.raises(ModelError, match="constant syntax"):
            model_from_dict({**copy.deepcopy(BASE_MODEL), field: code})
    with pytest.raises(ModelError, match="constant syntax"):
        model_from_dict({**copy.deepcopy(BASE_MODEL),
                         "equations": f"dv/dt = {code} : 1\ndw/dt = -w/tau : 1"})
    assert not marker.exists()


def test_checkpoints_are_read_without_unpickling_code(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"network": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists()
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ConfigError, match="truncated.pt"):
        load_checkpoint(tmp_path / "truncated.pt")


def test_the_package_never_evaluates_or_unpickles():
    """Every ``torch.load`` passes ``weights_only=True``; no ``eval``/``exec``/``pickle``."""
    loads = 0
    for path in PACKAGE.rglob("*.py"):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert not re.search(r"(?<![\w.])(eval|exec)\(|\bimport pickle\b|\bpickle\.", code), path
        for match in re.finditer(r"torch\.load\(", code):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(code[end], 0)
                end += 1
            loads += 1
            assert "weights_only=True" in code[match.start():end], (path, code[match.start():end])
    assert loads >= 1


@pytest.mark.parametrize("field, code, message", [
    ("rho", "9**9**9**9", "more than 10,000 digits"),
    ("rho", "(9**999)**999", "more than 10,000 digits"),
    ("rho", "1/0", "infinite or undefined"),
    ("energy", "1e400*v", "infinite or undefined"),
    ("equations", "dv/dt = -v/tau : 1 - 9**9**9**9\ndw/dt = -w/tau : 1", "unit of 'v'"),
    ("equations", "dv/dt = v**(9**9**9)/tau : 1\ndw/dt = -w/tau : 1", "digits"),
    ("equations", "dv/dt = (v - w / tau : 1\ndw/dt = -w/tau : 1", "invalid Brian2 equations"),
    ("equations", "dv/dt = -v/tau : mV\ndw/dt = -w/tau : 1", "invalid Brian2 equations"),
    ("parameters", "not a table", "'parameters' must be a table"),
    ("Q", [1, 2], "'Q' must be a table"),
    ("initial", {"v": float("nan")}, "initial.v"),
])
def test_hostile_model_fields_are_refused_quickly(field, code, message):
    started = time.perf_counter()
    with pytest.raises(ModelError, match=re.escape(message)):
        model_from_dict({**copy.deepcopy(BASE_MODEL), field: code})
    assert time.perf_counter() - started < 5.0


def test_wrong_arity_and_huge_exponents_are_model_errors():
    from neuroeq.network import Network

    with pytest.raises(ModelError, match="clip"):
        Network(model_from_dict({**BASE_MODEL, "structural_class": "general",
                                 "rho": "clip(v)"}), (3, 2, 2))
    model = model_from_dict({**BASE_MODEL, "structural_class": "general",
                             "equations": "dv/dt = v**(9**99)/tau : 1\ndw/dt = -w/tau : 1"})
    Network(model, (3, 2, 2))  # a huge integer exponent compiles (to a float power)


def test_overridden_time_constant_must_stay_positive():
    with pytest.raises(ModelError, match="time constant 'tau' must be positive"):
        load_model("fhn", tau=0.0)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00\x00", "not a UTF-8 text file"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"[" + b".".join([b"t"] * 100) + b"]\nx = 1", "nested more than"),
])
def test_unreadable_files_end_in_one_error_line(content, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    if b"[t." not in content:  # model files hold no nested tables worth a depth limit
        assert main(["classify", str(path)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error


def test_multi_line_errors_become_one_line(tmp_path, capsys):
    model = {**BASE_MODEL, "equations": "dv/dt = (v - : 1\n\ndw/dt = -w/tau : 1"}
    (tmp_path / "m.toml").write_bytes(_dump(model))
    assert main(["classify", str(tmp_path / "m.toml")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "invalid Brian2 equations" in error
