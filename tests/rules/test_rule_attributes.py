"""What a rule is and needs lives in its class attributes and constructor: the protocol
schema, the builder, the CLI and the classifier read them instead of lists of names."""

import pytest
import torch

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
    # without training the asymmetry protocol reads no [engine]: its gradient checks run on
    # torch only
    untrained = {**asymmetry, "asymmetry": {"rules": ["ep", rule], "train": False}}
    with pytest.raises(ConfigError, match=r"train = false does not read \[engine\]\.name"):
        load_protocol(untrained)
    load_protocol({key: value for key, value in untrained.items() if key != "engine"})


FROZEN_CASES = [(name, "hopfield_smooth") for name in
                ("ep", "centered", "vf", "asym", "dyadic", "holomorphic", "implicit", "bptt",
                 "fd")] + [("skew_ep", "fhn"), ("finite_nudge", "linear"),
                           ("path_integral", "linear")]


@pytest.mark.parametrize("rule_name, model", FROZEN_CASES)
def test_every_rule_leaves_a_frozen_parameter_alone(rule_name, model):
    import torch

    from neuroeq import Network, Readout

    network = Network(model, (3, 4, 2), seed=0, gain=0.5,
                      readout=Readout(2, 3, kind="linear", seed=0, dtype=torch.float64))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (2,), generator=generator)
    frozen = (network.weights["W1"], network.readout.weight)
    for param in frozen:
        param.requires_grad_(False)
    before = [param.clone() for param in frozen]
    options = {"chains": 16, "seed": 0} if model == "linear" else {}
    rule = make_rule(rule_name, beta=0.1, **options)
    estimate = rule.estimate(network, (x, y))  # autograd-based rules raised here
    assert "weights.W1" not in estimate.grads and "readout.weight" not in estimate.grads
    assert all(param.grad is None for param in frozen)
    assert network.weights["W2"].grad is not None and network.biases["b1"].grad is not None
    torch.optim.SGD(network.parameters(), lr=1.0).step()
    assert all(torch.equal(param, old) for param, old in zip(frozen, before, strict=True))


def _rule_options(name):
    return {"chains": 16} if RULES[name].samples_gibbs else {}


@pytest.mark.parametrize("name", [name for name, rule in RULES.items()
                                  if not rule.runs_on_brian2 and not rule.uses_spike_statistics
                                  and name != "bptt"])  # (BPTT: tests/engines, brian2)
def test_a_rule_the_brian2_engine_cannot_run_refuses_it_when_made(name):
    """In Python too, not only in protocols: holomorphic EP and the Gibbs rules ran their
    own phases in torch from a Brian2 free phase, Dyadic EP and finite differences failed
    only after that free phase."""
    from neuroeq.engines.brian2_engine import Brian2Engine

    engine = Brian2Engine(target="numpy")
    message = (rf"rule '{name}' \({RULES[name].__name__}\) does not run on the brian2 engine "
               rf"\(Brian2Engine\), .*use a rule that runs there: {', '.join(BRIAN2_RULES)}$")
    with pytest.raises(ConfigError, match=message):
        make_rule(name, beta=0.5, engine=engine, **_rule_options(name))
    for runs in BRIAN2_RULES:  # the rules it runs take it
        assert make_rule(runs, beta=0.5, engine=engine).engine is engine


def test_a_brian2_engine_given_to_a_rule_later_is_refused_at_its_next_estimate():
    from neuroeq import Network
    from neuroeq.engines.brian2_engine import Brian2Engine

    network = Network("hopfield_smooth", (3, 4, 2), seed=0)
    batch = (torch.full((2, 3), 0.5, dtype=torch.float64), torch.tensor([0, 1]))
    rule = make_rule("holomorphic", beta=0.1)
    rule.engine = Brian2Engine(target="numpy")
    with pytest.raises(ConfigError, match=r"rule 'holomorphic' \(HolomorphicEP\) does not "
                                          "run on the brian2 engine"):
        rule.estimate(network, batch, write_grad=False)
    assert all(param.grad is None for param in network.parameters())


@pytest.mark.parametrize("name", ["ep", "holomorphic", "finite_nudge", "stoch_ep"])
def test_an_object_that_is_not_an_engine_is_refused_by_name(name):
    from neuroeq.engines.langevin import LangevinSampler

    for engine, what in (("brian2", "str"), (LangevinSampler(0.05), "LangevinSampler")):
        with pytest.raises(ConfigError, match=rf"rule '{name}': engine must be a relaxation "
                                              r"engine \(TorchEngine, Brian2Engine or "
                                              rf"SpikingEngine\), got {what}"):
            make_rule(name, beta=0.5, engine=engine, **_rule_options(name))
    if name == "finite_nudge":  # its sampler is made from its own options
        with pytest.raises(ConfigError, match="it makes its own Langevin sampler"):
            make_rule(name, beta=0.5, engine=LangevinSampler(0.05))


@pytest.mark.parametrize("name, engines", [("holomorphic", r"\(TorchEngine\)"),
                                           ("finite_nudge", r"\(TorchEngine\)"),
                                           ("asym", r"\(TorchEngine or Brian2Engine\)")])
def test_the_spiking_engine_is_refused_naming_the_engines_the_rule_runs_on(name, engines):
    from neuroeq.engines.brian2_spiking import SpikingEngine

    with pytest.raises(ConfigError, match=rf"rule '{name}' needs an engine that relaxes to "
                                          rf"rest {engines}; the brian2_spiking engine "
                                          r"\(SpikingEngine\) samples spike statistics, for "
                                          "rule stoch_ep$"):
        make_rule(name, beta=0.5, engine=SpikingEngine(target="numpy"), **_rule_options(name))
