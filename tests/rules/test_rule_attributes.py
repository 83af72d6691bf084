"""What a rule is and needs lives in its class attributes and constructor: the protocol
schema, the builder, the CLI and the classifier read them instead of lists of names."""

import pytest

from neuroeq.errors import ConfigError
from neuroeq.protocols import build, load_protocol
from neuroeq.protocols.schema import BRIAN2_RULES, GIBBS_RULES, RULE_OPTIONS, SPIKING_RULES
from neuroeq.rules import RULES, GradientEstimator, make_rule, rule_options


def _concrete_rules(cls=GradientEstimator):
    for sub in cls.__subclasses__():
        if not sub.__name__.startswith("_"):
            yield sub
        yield from _concrete_rules(sub)


def test_every_rule_class_is_listed_under_its_own_name():
    listed = set(RULES.values())
    for rule in _concrete_rules():
        assert rule in listed, f"{rule.__name__} is missing from neuroeq.rules.RULES"
    for name, rule in RULES.items():
        assert rule.name == name and rule.exact_for


def test_the_schema_lists_follow_the_attributes():
    assert GIBBS_RULES == ("finite_nudge", "path_integral")
    assert SPIKING_RULES == ("stoch_ep",)
    assert set(BRIAN2_RULES) == {"ep", "centered", "vf", "asym", "skew_ep", "skew_centered",
                                 "implicit"}
    assert RULE_OPTIONS["random_sign"] == ("ep", "skew_ep")
    assert RULE_OPTIONS["centered"] == ("vf", "asym", "stoch_ep")
    # the oracles have no nudged phase, so no nudge budget; centered EP has no sign to draw
    assert rule_options("implicit") == ["engine"]
    with pytest.raises(ConfigError, match="rule 'centered' has no option 'random_sign'"):
        make_rule("centered", random_sign=True)


BASE = {"protocol": {"name": "t", "kind": "train"}, "model": {"name": "hopfield"},
        "network": {"sizes": [6, 4, 3]}}


def _protocol(**sections):
    return load_protocol({**BASE, **sections})


@pytest.mark.parametrize("name, centered", [("vf", False), ("asym", False), ("asym", True)])
def test_a_rule_key_reaches_every_rule_that_takes_it(name, centered):
    config = _protocol(rule={"name": name, "centered": centered}).config
    model = build.build_model(config)
    rule = build.build_rule(config, model)
    assert type(rule) is RULES[name] and rule.centered is centered


def test_random_sign_is_refused_where_no_sign_is_drawn():
    with pytest.raises(ConfigError, match=r"\[rule\].random_sign applies to rule ep or "
                                          "skew_ep, not 'centered'"):
        _protocol(rule={"name": "centered", "random_sign": True})
    config = _protocol(rule={"name": "ep", "random_sign": True}).config
    assert build.build_rule(config, build.build_model(config)).random_sign is True


@pytest.mark.parametrize("rule", ["dyadic", "holomorphic", "bptt", "finite_nudge"])
def test_a_rule_the_brian2_engine_cannot_run_is_refused_at_load(rule):
    with pytest.raises(ConfigError, match=rf"\[rule\].name '{rule}' does not run on the "
                                          "Brian2 engine"):
        _protocol(engine={"name": "brian2"}, rule={"name": rule})
    if rule in GIBBS_RULES:  # not a rule of asymmetry protocols
        return
    asymmetry = {"protocol": {"name": "t", "kind": "asymmetry"}, "model": {"name": "hopfield"},
                 "engine": {"name": "brian2"}, "asymmetry": {"rules": ["ep", rule]}}
    with pytest.raises(ConfigError, match=rf"\[asymmetry\].rules '{rule}' does not run"):
        load_protocol(asymmetry)
    # without training the asymmetry protocol's gradient checks run on torch only
    load_protocol({**asymmetry, "asymmetry": {"rules": ["ep", rule], "train": False}})
