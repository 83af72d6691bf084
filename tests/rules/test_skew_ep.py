"""Skew-gradient EP on FitzHugh-Nagumo networks with symmetric coupling."""

import pytest
import torch

from neuroeq.errors import ConfigError
from neuroeq.rules import CenteredSkewGradientEP, ImplicitDifferentiation, SkewGradientEP, make_rule
from tests.conftest import cosine, make_problem


@pytest.mark.parametrize("sizes", [(20, 16, 5), (20, 16, 16, 5)])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rule_class, beta, tolerance", [(SkewGradientEP, 1e-4, 1e-3),
                                                         (CenteredSkewGradientEP, 1e-3, 1e-5)])
def test_skew_gradient_ep_matches_oracle(sizes, seed, rule_class, beta, tolerance,
                                         precise_engine):
    network, batch = make_problem("fhn", sizes, seed=seed)
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = precise_engine.relax(network, batch[0])
    true = ImplicitDifferentiation(precise_engine).estimate(network, batch, free=free,
                                                            write_grad=False)
    found = rule_class(beta, precise_engine).estimate(network, batch, free=free,
                                                      write_grad=False)
    assert cosine(found.flat(names), true.flat(names)) >= 0.9999
    # and the scale: O(β) one-sided (3e-5 measured), O(β²) centered (7e-8)
    error = (found.flat(names) - true.flat(names)).norm() / true.flat(names).norm()
    assert float(error) < tolerance


def test_ep_names_mean_skew_gradient_ep_for_fhn():
    assert isinstance(make_rule("ep", model_class="skew_gradient"), SkewGradientEP)
    assert isinstance(make_rule("centered", model_class="skew_gradient"), CenteredSkewGradientEP)


def test_skew_gradient_ep_refuses_other_models(precise_engine):
    network, batch = make_problem("hopfield_smooth")
    with pytest.raises(ConfigError, match="skew-gradient"):
        SkewGradientEP(1e-3, precise_engine).estimate(network, batch)
