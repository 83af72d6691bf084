"""Protocol files are validated key by key; bad ones give one clear error naming the key."""

import pytest

from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.protocols import load_protocol, parse_override

BASE = {"protocol": {"name": "t", "kind": "train"}, "model": {"name": "hopfield"},
        "rule": {"name": "centered"}}


def _with(section, key, value):
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {})[key] = value
    return data


def test_defaults_are_filled_in():
    protocol = load_protocol(BASE)
    assert protocol.kind == "train"
    assert protocol.config["training"]["epochs"] == 10
    assert protocol.config["network"]["sizes"] == [64, 32, 10]
    assert "[rule]" in protocol.to_toml()


@pytest.mark.parametrize("section, key, value, message", [
    ("training", "epochs", "ten", "[training].epochs must be an integer"),
    ("training", "epochs", 0, "[training].epochs must be positive"),
    ("training", "epochs", True, "[training].epochs must be an integer"),
    ("rule", "name", "backprop", "unknown value 'backprop'"),
    ("rule", "beta", float("nan"), "[rule].beta must be finite"),
    ("rule", "beta", -0.5, "[rule].beta must be positive"),
    ("network", "sizes", [64, -3, 10], "[network].sizes must be positive"),
    ("network", "sizes", [10 ** 9, 10], "[network].sizes must be at most"),
    ("network", "sizes", [60000, 60000, 60000], "synapses"),
    ("network", "sizes", [64], "needs an input and an output layer"),
    ("network", "alpha", 1.5, "[network].alpha must be at most 1"),
    ("network", "colour", "red", "unknown key [network].colour"),
    ("training", "lr", {"W1": "fast"}, "[training].lr.W1 must be a number"),
    ("engine", "dt_ms", 0.0, "[engine].dt_ms must be positive"),
])
def test_bad_values_name_the_key(section, key, value, message):
    with pytest.raises(ConfigError) as error:
        load_protocol(_with(section, key, value))
    assert message in str(error.value)


def test_structural_errors():
    with pytest.raises(ConfigError, match="missing \\[protocol\\]"):
        load_protocol({"model": {"name": "fhn"}})
    with pytest.raises(ConfigError, match="kind must be one of"):
        load_protocol({"protocol": {"name": "x", "kind": "magic"}})
    with pytest.raises(ConfigError, match="unknown section"):
        load_protocol({**BASE, "exec": {"code": "import os"}})
    with pytest.raises(ConfigError, match="needs a \\[rule\\] section"):
        load_protocol({"protocol": {"name": "t", "kind": "train"}, "model": {"name": "fhn"}})
    with pytest.raises(ConfigError, match="not used by kind 'gradcheck'"):
        load_protocol({"protocol": {"name": "g", "kind": "gradcheck"}, "rule": {"name": "ep"}})


def test_overrides_are_parsed_as_toml_values():
    assert parse_override("training.epochs=3") == (["training", "epochs"], 3)
    assert parse_override("rule.name=asym") == (["rule", "name"], "asym")
    assert parse_override("network.sizes=[64, 8, 10]") == (["network", "sizes"], [64, 8, 10])
    protocol = load_protocol(BASE, ["training.lr.W1=0.1", "rule.beta=0.25"])
    assert protocol.config["training"]["lr"] == {"W1": 0.1}
    assert protocol.config["rule"]["beta"] == 0.25
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs=3")


def test_cli_reports_bad_protocol_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[protocol]\nname = "b"\nkind = "train"\n[model]\nname = "fhn"\n'
                   '[rule]\nname = "centered"\n[training]\nepochs = -2\n')
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "[training].epochs must be positive" in error
    broken = tmp_path / "broken.toml"
    broken.write_text("[protocol\nname = ")
    assert main(["run", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_protocol_docs_list_every_key():
    from pathlib import Path

    from neuroeq.protocols.schema import schema_markdown

    docs = Path(__file__).resolve().parents[2] / "docs" / "protocols.md"
    assert schema_markdown() in docs.read_text(), "regenerate docs/protocols.md"
