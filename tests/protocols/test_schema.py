"""Protocol files are validated key by key; bad ones give one clear error naming the key."""

import pytest

from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.protocols import build, load_protocol, parse_override

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


def test_lateral_and_skip_weights_count_toward_the_size_limit():
    wide = _with("network", "sizes", [64, 15_000, 10])  # 1.1 M synapses: fine
    load_protocol(wide)
    with pytest.raises(ConfigError, match="226,110,100 synapses"):  # + 15,000² lateral
        load_protocol({**wide, "network": {**wide["network"], "lateral": True}})


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
    ("rule", "temperature", 0.1, "[rule].temperature applies to rule finite_nudge or "
                                 "path_integral, not 'centered'"),
    ("rule", "centered", False, "[rule].centered applies to rule vf or asym or stoch_ep"),
    ("engine", "window", 100, "[engine].window applies to engine spiking, not 'torch'"),
    ("engine", "anderson_memory", 5, "[engine].anderson_memory applies to solver 'anderson', "
                                     "not 'euler'"),
    ("engine", "over_relaxation", 1.5, "[engine].over_relaxation applies to solver "
                                       "'gauss_seidel'"),
    ("engine", "target", "numpy", "[engine].target applies to the Brian2 engines"),
    ("engine", "name", "spiking", "[engine].name 'spiking' runs rule stoch_ep only"),
])
def test_bad_values_name_the_key(section, key, value, message):
    with pytest.raises(ConfigError) as error:
        load_protocol(_with(section, key, value))
    assert message in str(error.value)


GIBBS = {**BASE, "rule": {"name": "finite_nudge", "beta": 1.0}}


@pytest.mark.parametrize("key, value, message", [
    ("temperature", 0.0, "[rule].temperature must be positive"),
    ("temperature", "hot", "[rule].temperature must be a number"),
    ("chains", 2.5, "[rule].chains must be an integer"),
    ("groups", 1, "[rule].groups must be at least 2"),
    ("burn_in", -1, "[rule].burn_in must be at least 0"),
    ("samples", 0, "[rule].samples must be positive"),
    ("metropolis", "yes", "[rule].metropolis must be true or false"),
    ("dt_ms", -0.1, "[rule].dt_ms must be positive"),
    ("points", 4, "[rule].points applies to rule holomorphic or path_integral, not "
                  "'finite_nudge'"),
    ("beta", 1.5, "[rule].beta must be at most 1 for rule 'finite_nudge'"),
])
def test_noisy_network_rule_keys_are_checked(key, value, message):
    data = {**GIBBS, "rule": {**GIBBS["rule"], key: value}}
    with pytest.raises(ConfigError) as error:
        load_protocol(data)
    assert message in str(error.value)


def test_rule_and_engine_options_resolve():
    rule = load_protocol({**GIBBS, "rule": {**GIBBS["rule"], "temperature": 0.1,
                                            "chains": 8, "groups": 2}}).config["rule"]
    assert (rule["temperature"], rule["chains"], rule["groups"], rule["samples"]) == (
        0.1, 8, 2, None)  # None: the rule's default
    spiking = load_protocol({**BASE, "model": {"name": "spiking_rate"},
                             "rule": {"name": "stoch_ep", "centered": False},
                             "engine": {"name": "spiking", "window": 50, "replicas": 3}})
    assert spiking.config["engine"]["window"] == 50 and spiking.config["rule"]["centered"] is False
    with pytest.raises(ConfigError, match="needs \\[engine\\].name = 'spiking'"):
        load_protocol({**BASE, "rule": {"name": "stoch_ep"}})
    with pytest.raises(ConfigError, match="\\[engine\\].free_steps applies to engine torch"):
        load_protocol({**BASE, "rule": {"name": "stoch_ep"},
                       "engine": {"name": "spiking", "free_steps": 10}})
    with pytest.raises(ConfigError, match="needs a train protocol"):
        load_protocol({"protocol": {"name": "a", "kind": "asymmetry"},
                       "model": {"name": "hopfield"}, "engine": {"name": "spiking"}})


def test_engine_check_and_nudge_intervals_reach_the_engines():
    from neuroeq.protocols.build import build_engine

    brian2 = load_protocol({**BASE, "engine": {"name": "brian2", "check_every": 20,
                                               "nudge_every": 5}}).config
    engine = build_engine(brian2)
    assert (engine.name, engine.check_every, engine.nudge_every) == ("brian2", 20, 5)
    torch_engine = build_engine(load_protocol({**BASE, "engine": {"check_every": 3}}).config)
    assert (torch_engine.name, torch_engine.check_every) == ("torch", 3)
    with pytest.raises(ConfigError, match="\\[engine\\].nudge_every applies to engine brian2"):
        load_protocol({**BASE, "engine": {"nudge_every": 5}})


def test_solver_settings_reach_the_torch_engine_only():
    from neuroeq.protocols.build import build_engine

    config = load_protocol({**BASE, "engine": {"solver": "anderson", "anderson_memory": 3,
                                               "anderson_mixing": 1.5}}).config
    engine = build_engine(config)
    assert (engine.solver, engine.anderson_memory, engine.anderson_mixing) == \
        ("anderson", 3, 1.5)
    default = build_engine(load_protocol({**BASE, "engine": {"solver": "anderson"}}).config)
    assert (default.anderson_memory, default.anderson_mixing) == (10, 1.0)
    with pytest.raises(ConfigError, match="\\[engine\\].anderson_mixing applies to engine torch"):
        load_protocol({**BASE, "engine": {"name": "brian2", "anderson_mixing": 1.5}})
    with pytest.raises(ConfigError, match="anderson_mixing"):
        load_protocol({**BASE, "engine": {"anderson_mixing": -1.0}})
    sweeps = build_engine(load_protocol({**BASE, "engine": {
        "solver": "gauss_seidel", "over_relaxation": 2.0}}).config)
    assert (sweeps.solver, sweeps.over_relaxation) == ("gauss_seidel", 2.0)


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
    protocol = load_protocol(BASE, ["training.lr.W1=0.1", "training.lr.default=0.05",
                                    "rule.beta=0.25"])
    assert protocol.config["training"]["lr"] == {"W1": 0.1, "default": 0.05}
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
    assert main(["run", str(tmp_path)]) == 2
    assert "is a directory; give the protocol file itself" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_protocol_docs_list_every_key():
    from pathlib import Path

    from neuroeq.protocols.schema import REGENERATE_DOCS, schema_markdown

    docs = Path(__file__).resolve().parents[2] / "docs" / "protocols.md"
    assert schema_markdown() in docs.read_text(), \
        f"regenerate docs/protocols.md: {REGENERATE_DOCS}"


def test_the_docs_tables_are_rewritten_under_their_heading(tmp_path):
    from neuroeq.protocols.schema import schema_markdown, update_schema_docs

    docs = tmp_path / "protocols.md"
    docs.write_text("# Protocols\n\nprose\n\n## Keys\n\nold tables\n")
    assert update_schema_docs(docs)
    assert docs.read_text() == "# Protocols\n\nprose\n\n## Keys\n\n" + schema_markdown()
    assert not update_schema_docs(docs)
    docs.write_text("no heading\n")
    with pytest.raises(ConfigError, match="no '## Keys' heading"):
        update_schema_docs(docs)


@pytest.mark.parametrize("name", [".", "..", "", "../elsewhere", "/tmp/absolute", "a/b",
                                  ".hidden", "-flag", "two words"])
def test_a_protocol_name_must_be_one_plain_folder_name(name):
    # it names results/NAME: "." would make --force replace results/ itself, "../x" or an
    # absolute path would write outside it
    data = {"protocol": {"name": name, "kind": "gradcheck"}}
    with pytest.raises(ConfigError, match=r"\[protocol\]\.name .* must be a plain folder name"):
        load_protocol(data)
    data["protocol"]["name"] = "beta_sweep-2.v1"
    assert load_protocol(data).name == "beta_sweep-2.v1"


def test_an_unknown_model_is_named_with_its_key_when_the_protocol_loads():
    data = {"protocol": {"name": "x", "kind": "train"}, "model": {"name": "hopfeld"},
            "rule": {"name": "centered"}}
    with pytest.raises(ConfigError, match=r"\[model\]\.name: unknown model 'hopfeld' \(did "
                                          r"you mean 'hopfield'\?\); available: .*hopfield"):
        load_protocol(data)


def test_a_model_parameter_the_model_lacks_is_named_when_the_protocol_loads(tmp_path):
    """Before any result folder exists (it used to be refused once the run had started)."""
    fhn = {**BASE, "model": {"name": "fhn", "parameters": {"epss": 0.1}}}
    with pytest.raises(ConfigError, match=r"model.parameters.epss: model 'fhn' has no "
                                          r"parameter 'epss' \(did you mean 'eps'\?\); its "
                                          r"parameters: a, b, eps, tau"):
        load_protocol(fhn)
    with pytest.raises(ConfigError, match=r"\(with model.parameters.aa=0.0\): "
                                          r"model.parameters.aa: model 'hopfield'"):
        load_protocol(BASE, ["model.parameters.aa=0.0"])
    assert load_protocol(BASE, ["model.parameters.tau=0.02"]).config["model"][
        "parameters"] == {"tau": 0.02}
    path = tmp_path / "p.toml"
    path.write_text('[protocol]\nname = "p"\nkind = "train"\n[model]\nname = "fhn"\n'
                    '[model.parameters]\nepss = 0.1\n')
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


@pytest.mark.parametrize("network, rates, message", [
    ({}, {"W9": 0.1}, r"training.lr names unknown parameter 'W9'; known: W1, W2, b1, b2, "
                      r"default \(the readout has no parameters\)"),
    ({}, {"W1": 0.1}, r"training.lr has no rate for parameter 'W2'; give it one or add "
                      r"'default'"),
    ({"coupling": "asymmetric", "readout": "linear"}, {"BW3": 0.1, "default": 0.1},
     r"training.lr names unknown parameter 'BW3' \(did you mean 'BW2'\?\); known: BW2, W1, "
     r"W2, b1, b2, "
     r"readout, default"),
    ({}, {"W1": 0.1, "weights.W1": 0.2, "default": 0.1},
     r"training.lr gives parameter 'W1' two rates"),
])
def test_a_rate_table_is_checked_against_the_networks_parameters_when_it_loads(
        network, rates, message):
    """The names depend on the layers and couplings, not the widths (a 784-500-10 net's
    names are a 1-1-1 net's): a misspelt one is named before any run starts."""
    data = {**BASE, "network": {"sizes": [64, 32, 10], **network},
            "training": {"lr": rates}}
    with pytest.raises(ConfigError, match=r"^<protocol>: " + message):
        load_protocol(data)
    good = {**data, "training": {"lr": {"default": 0.1, **{k: v for k, v in rates.items()
                                                           if k in ("W1", "b1")}}}}
    assert load_protocol(good).config["training"]["lr"]["default"] == 0.1


def test_holomorphic_ep_is_a_protocol_rule_with_its_points():
    data = {"protocol": {"name": "x", "kind": "train"}, "model": {"name": "hopfield_smooth"},
            "rule": {"name": "holomorphic", "beta": 0.1, "points": 8}}
    protocol = load_protocol(data)
    rule = build.build_rule(protocol.config, build.build_model(protocol.config))
    assert (rule.name, rule.beta, rule.points) == ("holomorphic", 0.1, 8)


def test_a_sweep_file_or_a_protocol_without_a_kind_is_named_for_what_it_is(tmp_path):
    with pytest.raises(ConfigError, match=r"s\.toml is a sweep file .* run it with neuroeq "
                                          "sweep"):
        load_protocol({**BASE, "sweep": {"grid": {"rule.beta": [0.1]}}}, name="s.toml")
    with pytest.raises(ConfigError, match=r"\[protocol\]\.kind is missing; give one of train, "):
        load_protocol({**BASE, "protocol": {"name": "t"}})


@pytest.mark.parametrize("section, key, value, suggestion", [
    ("rule", "name", "centred", "(did you mean 'centered'?)"),
    ("training", "epoch", 3, "(did you mean 'epochs'?)"),
    ("trainng", None, None, "(did you mean 'training'?)"),
])
def test_a_misspelt_name_gets_the_closest_known_one(section, key, value, suggestion):
    data = {k: dict(v) for k, v in BASE.items()}
    if key is None:
        data[section] = {}
    else:
        data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as error:
        load_protocol(data)
    assert suggestion in str(error.value)


def test_a_resolved_protocol_of_an_earlier_version_still_loads():
    """Earlier versions wrote every default into protocol.toml, the keys a kind does not
    read too: defaults pass, other values are refused."""
    from neuroeq.protocols.schema import SCHEMA

    data = {"protocol": {"name": "s", "kind": "snn_bptt"},
            "network": {"sizes": [64, 16, 10], "coupling": "symmetric", "dtype": "float32"},
            "training": {key: spec.default for key, spec in SCHEMA["training"].items()}}
    assert load_protocol(data).config["network"] == {"sizes": [64, 16, 10]}
    data["network"]["coupling"] = "feedforward"
    with pytest.raises(ConfigError, match=r"does not read \[network\]\.coupling"):
        load_protocol(data)


def test_a_change_to_a_key_the_kind_does_not_read_is_refused_whatever_its_value():
    """--set asks for a setting: one the kind would ignore is refused even at its default
    (in a file the default passes, as earlier versions wrote it)."""
    data = {"protocol": {"name": "s", "kind": "snn_bptt"}}
    for change in ("training.optimizer=sgd", "training.optimizer=adam",
                   "network.dtype=float32"):
        with pytest.raises(ConfigError, match=r"kind 'snn_bptt' does not read "
                                              rf"\[{change.split('.')[0]}\]\."):
            load_protocol(data, [change])
    assert load_protocol(data, ["training.epochs=2"]).config["training"]["epochs"] == 2


def test_gradient_checks_name_the_rules_they_cannot_check():
    data = {"protocol": {"name": "g", "kind": "gradcheck"}, "gradcheck": {"rules": ["stoch_ep"]}}
    with pytest.raises(ConfigError, match=r"\[gradcheck\]\.rules.*unknown value 'stoch_ep'"):
        load_protocol(data)
    from neuroeq.gradcheck import gradcheck

    with pytest.raises(ConfigError, match=r"unknown rule 'centred' \(did you mean "
                                          r"'centered'\?\)"):
        gradcheck(rules=["centred"], sizes=(4, 3, 2))
    with pytest.raises(ConfigError, match=r"unknown coupling 'symetric' \(did you mean "
                                          r"'symmetric'\?\)"):
        gradcheck(couplings=["symetric"], sizes=(4, 3, 2))


def test_every_kind_has_its_sections_its_runner_and_its_primary_result():
    from neuroeq.protocols.kinds import RUNNERS
    from neuroeq.protocols.schema import KINDS, REQUIRED_SECTIONS, SECTIONS_BY_KIND
    from neuroeq.protocols.sweep import PRIMARY_RESULT

    for table in (RUNNERS, SECTIONS_BY_KIND, REQUIRED_SECTIONS, PRIMARY_RESULT):
        assert set(table) == set(KINDS)


ASYMMETRY = {"protocol": {"name": "a", "kind": "asymmetry"}, "model": {"name": "hopfield"}}


@pytest.mark.parametrize("section, key, value, hint", [
    ("network", "coupling", "feedforward", "its networks are asymmetric"),
    ("network", "alpha", 0.5, "set [asymmetry].alphas"),
    ("network", "seed", 3, "set [asymmetry].seeds"),
    ("training", "checkpoint_every", 2, "it reads only epochs, "),
    ("outputs", "state_samples", 2, "it reads only figures, dpi of [outputs]"),
])
def test_an_asymmetry_protocol_refuses_the_keys_it_does_not_read(section, key, value, hint):
    with pytest.raises(ConfigError, match=rf"kind 'asymmetry' does not read "
                                          rf"\[{section}\]\.{key} \(") as error:
        load_protocol({**ASYMMETRY, section: {key: value}})
    assert hint in str(error.value)
    with pytest.raises(ConfigError, match=rf"does not read \[{section}\]\.{key}"):
        load_protocol(ASYMMETRY, [f"{section}.{key}={value!r}".replace("'", '"')])
    config = load_protocol({**ASYMMETRY, "network": {"sizes": [64, 8, 10], "gain": 2.0},
                            "training": {"epochs": 2, "seed": 1}}).config
    assert key not in config[section] and config["network"]["gain"] == 2.0


@pytest.mark.parametrize("section, key, value", [
    ("engine", "tol", 0.0), ("engine", "free_steps", 40), ("data", "name", "mnist"),
    ("training", "epochs", 3), ("network", "sizes", [64, 8, 10]),
])
def test_an_untrained_asymmetry_protocol_refuses_the_sections_it_does_not_read(section, key,
                                                                               value):
    untrained = {**ASYMMETRY, "asymmetry": {"train": False}}
    with_key = {**untrained, section: {**untrained.get(section, {}), key: value}}
    with pytest.raises(ConfigError, match=rf"kind 'asymmetry' with \[asymmetry\]\.train = "
                                          rf"false does not read \[{section}\]\.{key}"):
        load_protocol(with_key)
    trained = load_protocol({**with_key, "asymmetry": {"train": True}})
    assert trained.config[section][key] == value
    # at their defaults (as resolved protocols wrote them) they pass, and are left out
    from neuroeq.protocols.schema import SCHEMA

    defaults = {name: {k: spec.default for k, spec in SCHEMA[name].items()
                       if spec.default is not None}
                for name in ("network", "engine", "data", "training")}
    config = load_protocol({**untrained, **defaults}).config
    assert set(config) == {"protocol", "model", "asymmetry", "outputs"}
    assert config["model"] == {"name": "hopfield", "parameters": {}}
    # a change asks for a setting: refused even at its default value
    with pytest.raises(ConfigError, match=r"with \[asymmetry\]\.train = false does not read "
                                          r"\[training\]\.epochs"):
        load_protocol(untrained, ["training.epochs=10"])


@pytest.mark.parametrize("key, value, message", [
    ("models", ["hopfield", "hopfeld"],
     r"\[gradcheck\]\.models: unknown model 'hopfeld' \(did you mean 'hopfield'\?\)"),
    ("batch", 10_001, r"\[gradcheck\]\.batch must be at most 10000, got 10001"),
    ("batch", 0, r"\[gradcheck\]\.batch must be positive, got 0"),
    ("sizes", [10, 4000, 97], r"\[gradcheck\]\.sizes \[10, 4000, 97\] has 4,097 units beyond "
                              r"the input, more than the 4,096 a gradient check may ask for"),
])
def test_a_gradcheck_protocol_checks_its_models_batch_and_sizes_when_it_loads(key, value,
                                                                              message):
    data = {"protocol": {"name": "g", "kind": "gradcheck"}, "gradcheck": {key: value}}
    with pytest.raises(ConfigError, match=message):
        load_protocol(data)


def test_gradient_check_limits_are_those_of_the_gradient_check():
    from neuroeq.gradcheck import MAX_BATCH, MAX_UNITS

    data = {"protocol": {"name": "g", "kind": "gradcheck"},
            "gradcheck": {"batch": MAX_BATCH, "sizes": [5000, MAX_UNITS - 2, 2]}}
    assert load_protocol(data).config["gradcheck"]["batch"] == MAX_BATCH
    with pytest.raises(ConfigError, match=r"\[asymmetry\]\.gradcheck_sizes \[5, 4096, 2\] has "
                                          "4,098 units beyond the input"):
        load_protocol({**ASYMMETRY, "asymmetry": {"gradcheck_sizes": [5, 4096, 2]}})
    with pytest.raises(ConfigError, match=r"\[asymmetry\]\.gradcheck_sizes needs an input and "
                                          "an output layer"):
        load_protocol({**ASYMMETRY, "asymmetry": {"gradcheck_sizes": [5]}})


@pytest.mark.parametrize("text, what", [
    ("2024-01-01", "date"), ("2024-01-01T10:30:00", "date-time"), ("10:30:00", "time")])
def test_an_unquoted_date_where_a_string_belongs_says_to_quote_it(tmp_path, text, what):
    quote = rf'quote it, "{text}"; with --set: \'protocol.name="{text}"\''
    with pytest.raises(ConfigError, match=rf"\(with protocol\.name={text}\): \[protocol\]\.name "
                                          rf"must be a string, got {text}, "
                                          rf"which TOML reads as a {what} .*{quote}"):
        load_protocol({"protocol": {"name": "g", "kind": "gradcheck"}},
                      [f"protocol.name={text}"])
    path = tmp_path / "p.toml"
    path.write_text(f'[protocol]\nname = {text}\nkind = "gradcheck"\n')
    with pytest.raises(ConfigError, match=rf"\[protocol\]\.name must be a string, got {text}, "
                                          rf"which TOML reads as a {what}"):
        load_protocol(path)
    path.write_text(f'[protocol]\nname = "{text.replace(":", "-")}"\nkind = "gradcheck"\n')
    assert load_protocol(path).name == text.replace(":", "-")
    with pytest.raises(ConfigError, match=rf"\[gradcheck\]\.models must be a string, got "
                                          rf"{text}, which TOML reads as a {what}"):
        load_protocol({"protocol": {"name": "g", "kind": "gradcheck"}},
                      [f"gradcheck.models=[{text}]"])


@pytest.mark.parametrize("kind, coupling", [("train", "symmetric"), ("train", "feedforward"),
                                            ("stochastic", "symmetric")])
def test_an_alpha_with_a_coupling_that_has_none_is_refused_at_load(kind, coupling):
    data = {**BASE, "protocol": {"name": "t", "kind": kind},
            "network": {"coupling": coupling, "alpha": 0.3}}
    if kind == "stochastic":
        del data["rule"]
    with pytest.raises(ConfigError, match=rf"\[network\]\.alpha = 0\.3 sets the asymmetry of "
                                          rf"coupling 'asymmetric' .*\[network\]\.coupling = "
                                          rf"'{coupling}' has none: leave alpha out, or set "
                                          'coupling = "asymmetric"'):
        load_protocol(data)
    # a --set asks for it: refused whatever its value
    with pytest.raises(ConfigError, match=r"with network\.alpha=1\.0\): \[network\]\.alpha"):
        load_protocol({**data, "network": {"coupling": coupling}}, ["network.alpha=1.0"])
    data["network"]["coupling"] = "asymmetric"
    assert load_protocol(data).config["network"]["alpha"] == 0.3


def test_a_resolved_protocol_holds_alpha_for_asymmetric_coupling_only():
    """The network is built without one, and the resolved protocol.toml leaves it out; one
    written by an earlier version (alpha = 1.0 with every coupling) loads to the same
    settings, so its run still resumes."""
    from neuroeq.protocols.result_folder import changed_settings

    protocol = load_protocol(BASE)
    assert protocol.config["network"]["alpha"] is None and "alpha" not in protocol.to_toml()
    assert load_protocol(protocol.config).config == protocol.config  # (validated again)
    changed = load_protocol(protocol.config, ['network.coupling="asymmetric"']).config
    assert changed["network"]["alpha"] == 1.0
    assert build.build_network(protocol.config).alpha is None
    earlier = protocol.to_toml().replace("[network]\n", "[network]\nalpha = 1.0\n")
    assert "alpha = 1.0" in earlier
    import tomllib

    assert changed_settings(load_protocol(tomllib.loads(earlier)).config,
                            protocol.config) == []
    asymmetric = load_protocol(_with("network", "coupling", "asymmetric"))
    assert asymmetric.config["network"]["alpha"] == 1.0 and "alpha = 1.0" in \
        asymmetric.to_toml()
    assert build.build_network(asymmetric.config).alpha == 1.0


def test_gradcheck_alphas_need_an_asymmetric_coupling():
    data = {"protocol": {"name": "g", "kind": "gradcheck"},
            "gradcheck": {"couplings": ["symmetric"], "alphas": [0.0, 0.5]}}
    with pytest.raises(ConfigError, match=r"\[gradcheck\]\.alphas \[0\.0, 0\.5\] set the "
                                          "asymmetry of asymmetric networks, and couplings "
                                          "symmetric have none"):
        load_protocol(data)
    data["gradcheck"]["couplings"] = ["symmetric", "asymmetric"]
    assert load_protocol(data).config["gradcheck"]["alphas"] == [0.0, 0.5]


#: a minimal protocol of each kind that records no relaxation traces
NO_TRACES = {
    "gradcheck": {"protocol": {"name": "g", "kind": "gradcheck"}},
    "asymmetry": ASYMMETRY,
    "asymmetry with [asymmetry].train = false": {**ASYMMETRY, "asymmetry": {"train": False}},
    "stochastic": {"protocol": {"name": "s", "kind": "stochastic"},
                   "model": {"name": "hopfield"}},
    "snn_bptt": {"protocol": {"name": "b", "kind": "snn_bptt"}},
}


@pytest.mark.parametrize("key, value", [("state_samples", 2), ("trace_chunk", 5)])
@pytest.mark.parametrize("kind", list(NO_TRACES))
def test_trace_outputs_are_refused_by_the_kinds_that_record_no_traces(kind, key, value):
    """Only train records relaxation traces: another kind would ignore [outputs]
    state_samples and trace_chunk, so a value is refused, naming the key, the kind and the
    kind that reads it; at its default (as earlier versions' protocol.toml wrote it) it
    passes and is left out."""
    from neuroeq.protocols.schema import SCHEMA

    data = NO_TRACES[kind]
    message = (rf"kind '{kind.split()[0]}'.* does not read \[outputs\]\.{key} \(it reads only "
               r"figures, dpi of \[outputs\]; kind train reads it\)")
    with pytest.raises(ConfigError, match=message):
        load_protocol({**data, "outputs": {key: value}})
    default = SCHEMA["outputs"][key].default
    with pytest.raises(ConfigError, match=message):  # a change asks for it, even the default
        load_protocol(data, [f"outputs.{key}={default}"])
    config = load_protocol({**data, "outputs": {key: default, "dpi": 50}}).config
    assert config["outputs"] == {"figures": True, "dpi": 50}
    assert key not in load_protocol(config).to_toml()


def test_a_train_protocol_reads_its_trace_outputs_and_its_resolved_protocol_reloads():
    """The demo's state_samples and trace_chunk reach the resolved protocol, and its
    protocol.toml (as a run writes it and --resume reads it) loads again unchanged."""
    import tomllib
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "protocols" / "demo.toml"
    written = tomllib.loads(demo.read_text(encoding="utf-8"))["outputs"]
    assert {"state_samples", "trace_chunk"} <= set(written)
    protocol = load_protocol(demo)
    assert protocol.config["outputs"].items() >= written.items()
    changed = load_protocol(demo, ["outputs.state_samples=2", "outputs.trace_chunk=7"])
    assert (changed.config["outputs"]["state_samples"],
            changed.config["outputs"]["trace_chunk"]) == (2, 7)
    for resolved in (protocol, changed):
        assert load_protocol(tomllib.loads(resolved.to_toml())).config == resolved.config
