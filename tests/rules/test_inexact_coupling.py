"""Rules exact only with symmetric coupling (classic, centered and skew-gradient EP) run on
asymmetric and feedforward networks as biased baselines: each estimate warns that it is not
the gradient there and says so in ``Estimate.diagnostics["not_exact"]``, and the rules
exact on any coupling (AsymEP, Dyadic EP) and vector-field EP (the designated baseline)
stay silent."""

import warnings

import pytest
import torch

from neuroeq.rules import (
    AsymEP,
    CenteredEP,
    CenteredSkewGradientEP,
    ClassicEP,
    DyadicEP,
    ImplicitDifferentiation,
    SkewGradientEP,
    VectorFieldEP,
    make_rule,
)
from tests.conftest import make_problem

SIZES = (4, 6, 3)
HIDDEN = ("weights.W1", "biases.b1")  # the first hidden layer's parameters


def _estimates(rule_class, model, coupling, engine, beta=1e-3):
    """The rule's estimate (warnings recorded) and the true gradient, on one small net."""
    network, batch = make_problem(model, SIZES, coupling=coupling)
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = rule_class(beta, engine).estimate(network, batch, free=free, write_grad=False)
    return found, true, [w for w in caught if "not the gradient" in str(w.message)]


def _error(found, true, names=None):
    names = sorted(true.grads) if names is None else list(names)
    reference = true.flat(names)
    return float((found.flat(names) - reference).norm() / reference.norm())


@pytest.mark.parametrize("rule_class", [SkewGradientEP, CenteredSkewGradientEP])
@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
def test_skew_gradient_ep_off_symmetric_coupling_warns_and_is_far_from_the_gradient(
        rule_class, coupling, precise_engine):
    found, true, caught = _estimates(rule_class, "fhn", coupling, precise_engine)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert caught[0].category is RuntimeWarning
    assert f"rule {rule_class.name!r}" in message and f"coupling is {coupling!r}" in message
    assert "asym (AsymEP)" in message and "dyadic (DyadicEP)" in message
    assert found.diagnostics["not_exact"] in message
    # the measurement that justifies it (4-6-3 FHN, beta 1e-3, against the oracle): the
    # hidden layer's estimate is off by more than its size (asymmetric: 2.1; feedforward:
    # exactly 1, no nudge reaches it), overall 0.27 asymmetric and 0.014 feedforward,
    # where the same rule on the symmetric net is within 2.4e-4 (one-sided) and 5e-8
    assert _error(found, true, HIDDEN) > 0.9
    assert _error(found, true) > (0.2 if coupling == "asymmetric" else 5e-3)


@pytest.mark.parametrize("rule_class, tolerance", [(SkewGradientEP, 1e-3),
                                                   (CenteredSkewGradientEP, 1e-6)])
def test_skew_gradient_ep_on_symmetric_coupling_says_nothing(rule_class, tolerance,
                                                            precise_engine):
    found, true, caught = _estimates(rule_class, "fhn", "symmetric", precise_engine)
    assert caught == [] and "not_exact" not in found.diagnostics
    assert _error(found, true) < tolerance


def test_centered_on_an_asymmetric_fhn_net_warns_as_the_skew_gradient_rule(precise_engine):
    """``centered`` on a skew-gradient model is skew_centered, and so is the warning."""
    network, batch = make_problem("fhn", SIZES, coupling="asymmetric", alpha=0.0)
    rule = make_rule("centered", beta=1e-3, engine=precise_engine,
                     model_class=network.model.structural_class)
    # alpha = 0 starts the backward weights as the forward ones transposed, but they are
    # parameters of their own: the estimate is still not their gradient
    with pytest.warns(RuntimeWarning, match="rule 'skew_centered' .* coupling is "
                                            "'asymmetric': its estimate is not the gradient"):
        found = rule.estimate(network, batch, write_grad=False)
    assert "skew_centered" in found.diagnostics["not_exact"]


@pytest.mark.parametrize("rule_class", [ClassicEP, CenteredEP])
@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
def test_classic_ep_off_symmetric_coupling_warns(rule_class, coupling, precise_engine):
    found, true, caught = _estimates(rule_class, "hopfield_smooth", coupling, precise_engine)
    assert len(caught) == 1 and f"rule {rule_class.name!r}" in str(caught[0].message)
    assert f"coupling is {coupling!r}" in found.diagnostics["not_exact"]
    assert _error(found, true) > 0.1


@pytest.mark.parametrize("rule_class", [ClassicEP, CenteredEP])
def test_classic_ep_on_symmetric_coupling_says_nothing(rule_class, precise_engine):
    found, _, caught = _estimates(rule_class, "hopfield_smooth", "symmetric", precise_engine)
    assert caught == [] and "not_exact" not in found.diagnostics


@pytest.mark.parametrize("rule_class", [AsymEP, DyadicEP, VectorFieldEP])
@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
def test_rules_exact_there_and_the_vf_baseline_stay_silent(rule_class, coupling,
                                                           precise_engine):
    network, batch = make_problem("fhn", SIZES, coupling=coupling)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        found = rule_class(1e-3, precise_engine).estimate(network, batch, write_grad=False)
    assert found.diagnostics == {}


def test_the_warning_is_said_once_per_call_site_by_the_default_filter(precise_engine):
    network, batch = make_problem("fhn", SIZES, coupling="feedforward")
    rule = SkewGradientEP(1e-3, precise_engine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            rule.estimate(network, batch, write_grad=False)
    assert len([w for w in caught if "not the gradient" in str(w.message)]) == 1


def test_the_note_is_declared_by_coupling():
    assert SkewGradientEP.inexact_note("symmetric", "fhn") is None
    assert AsymEP.inexact_note("feedforward", "fhn") is None
    assert VectorFieldEP.inexact_note("asymmetric", "fhn") is None
    assert "'feedforward'" in CenteredSkewGradientEP.inexact_note("feedforward", "fhn")


def test_stochastic_ep_declares_the_coupling_its_mean_field_limit_needs():
    """Its mean-field limit is EP's contrast on the rate network, biased by non-reciprocal
    coupling as classic EP is."""
    from neuroeq.rules import StochasticEP

    assert StochasticEP.inexact_note("symmetric", "bernoulli") is None
    assert "'asymmetric'" in StochasticEP.inexact_note("asymmetric", "bernoulli")
