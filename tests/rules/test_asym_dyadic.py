"""AsymEP and Dyadic EP are exact on asymmetric and feedforward networks; VF-EP is not."""

import pytest
import torch

from neuroeq.rules import AsymEP, DyadicEP, ImplicitDifferentiation, VectorFieldEP
from tests.conftest import cosine, make_problem


def _cosines(network, batch, rules, engine):
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False).flat(names)
    return {rule.name: cosine(rule.estimate(network, batch, free=free,
                                            write_grad=False).flat(names), true)
            for rule in rules}


@pytest.mark.parametrize("model", ["hopfield_smooth", "fhn", "spiking_rate"])
@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
@pytest.mark.parametrize("sizes", [(20, 16, 5), (20, 16, 16, 5)])
def test_asym_and_dyadic_are_exact(model, coupling, sizes, precise_engine):
    network, batch = make_problem(model, sizes, coupling, alpha=1.0)
    found = _cosines(network, batch, [AsymEP(1e-4, precise_engine),
                                      DyadicEP(1e-4, precise_engine)], precise_engine)
    assert found["asym"] >= 0.9999
    assert found["dyadic"] >= 0.9999


def test_dyadic_is_exact_for_large_beta(precise_engine):
    network, batch = make_problem("hopfield_smooth", coupling="asymmetric")
    found = _cosines(network, batch, [DyadicEP(1.0, precise_engine)], precise_engine)
    assert found["dyadic"] >= 0.999999


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_field_ep_is_measurably_worse_when_fully_asymmetric(seed, precise_engine):
    network, batch = make_problem("hopfield_smooth", coupling="asymmetric", alpha=1.0, seed=seed)
    found = _cosines(network, batch, [AsymEP(1e-4, precise_engine),
                                      VectorFieldEP(1e-4, precise_engine)], precise_engine)
    assert found["asym"] - found["vf"] > 0.05, found
