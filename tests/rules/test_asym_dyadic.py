"""AsymEP and Dyadic EP are exact on asymmetric and feedforward networks; VF-EP is not."""

import math

import pytest
import torch

from neuroeq.rules import AsymEP, DyadicEP, ImplicitDifferentiation, VectorFieldEP
from tests.conftest import cosine, make_problem


def _compare(network, batch, rules, engine):
    """Per rule: ``(cosine, relative error)`` of its estimate against implicit
    differentiation, from one shared free phase."""
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False).flat(names)
    found = {rule.name: rule.estimate(network, batch, free=free, write_grad=False).flat(names)
             for rule in rules}
    return {name: (cosine(g, true), float((g - true).norm() / true.norm()))
            for name, g in found.items()}


def _cosines(network, batch, rules, engine):
    return {name: pair[0] for name, pair in _compare(network, batch, rules, engine).items()}


def _relative_errors(network, batch, rules, engine):
    return {name: pair[1] for name, pair in _compare(network, batch, rules, engine).items()}


@pytest.mark.parametrize("model", ["hopfield_smooth", "fhn", "spiking_rate"])
@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
@pytest.mark.parametrize("sizes", [(20, 16, 5), (20, 16, 16, 5)])
def test_asym_and_dyadic_are_exact(model, coupling, sizes, precise_engine):
    network, batch = make_problem(model, sizes, coupling)  # (asymmetric: alpha 1)
    rules = [AsymEP(1e-4, precise_engine), DyadicEP(1e-4, precise_engine)]
    found = _compare(network, batch, rules, precise_engine)
    assert found["asym"][0] >= 0.9999
    assert found["dyadic"][0] >= 0.9999
    assert found["asym"][1] < 1e-5 and found["dyadic"][1] < 1e-5, found  # and the scale


def test_asym_ep_errors_fall_at_their_order(precise_engine):
    """Centered AsymEP: O(β²) (2.1e-4, 2.1e-6 at β = 1e-2, 1e-3); one-sided: O(β)."""
    network, batch = make_problem("hopfield_smooth", (20, 16, 5), "asymmetric")
    for centered, slope in ((True, 2), (False, 1)):
        errors = [_relative_errors(network, batch, [AsymEP(beta, precise_engine,
                                                           centered=centered)],
                                   precise_engine)["asym"] for beta in (1e-2, 1e-3)]
        assert abs(math.log10(errors[0] / errors[1]) - slope) < 0.2, (centered, errors)
    assert errors[1] < 1e-2  # one-sided at β = 1e-3: 1.8e-3


def test_dyadic_is_exact_for_large_beta(precise_engine):
    network, batch = make_problem("hopfield_smooth", coupling="asymmetric")
    found = _cosines(network, batch, [DyadicEP(1.0, precise_engine)], precise_engine)
    assert found["dyadic"] >= 0.999999


def test_dyadic_accuracy_does_not_fall_as_beta_shrinks():
    """``d`` is O(β) while the engine's stopping test is absolute: integrating ``d/β`` keeps
    the adjoint's accuracy at the default tolerance for every β (it was 1.5e-2 at 1e-4)."""
    from neuroeq import TorchEngine

    network, batch = make_problem("hopfield_smooth", (4, 5, 3), "asymmetric", alpha=1.0)
    names = [n for n, _ in network.named_parameters()]
    tight = TorchEngine(tol=1e-12, max_steps=20000)
    true = ImplicitDifferentiation(tight).estimate(network, batch, write_grad=False).flat(names)
    for beta in (1e-4, 1.0):
        found = DyadicEP(beta, TorchEngine()).estimate(network, batch,
                                                       write_grad=False).flat(names)
        assert float((found - true).norm() / true.norm()) < 1e-5, beta


@pytest.mark.parametrize("coupling, bias", [("symmetric", 0.1), ("asymmetric", 0.5)])
def test_dyadic_is_exact_with_units_pinned_at_either_bound(coupling, bias):
    """Hopfield's projected dynamics: some units' free states are 0, others sit at 1 with F
    pushing out. The midpoint is projected and
    pinned units follow the oracle's convention (row -1/τ of J, no ∂F/∂θ); before, the
    midpoint left the bounds and chattered."""
    from neuroeq import Network, TorchEngine

    network = Network("hopfield", (4, 5, 3), coupling=coupling,
                      alpha=0.5 if coupling == "asymmetric" else None, seed=1,
                      bias_init=bias)
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([1, 0, 2])
    engine = TorchEngine(tol=1e-11, max_steps=5000)
    with torch.no_grad():
        free = engine.relax(network, x)
    assert float(free.state.max()) == 1.0 and float(free.state.min()) == 0.0
    names = [n for n, _ in network.named_parameters()]
    true = ImplicitDifferentiation(engine).estimate(network, (x, y), free=free,
                                                    write_grad=False).flat(names)
    for beta in (1e-3, 1.0):
        found = DyadicEP(beta, engine).estimate(network, (x, y), free=free,
                                                write_grad=False).flat(names)
        assert float((found - true).norm() / true.norm()) < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_field_ep_is_measurably_worse_when_fully_asymmetric(seed, precise_engine):
    network, batch = make_problem("hopfield_smooth", coupling="asymmetric", alpha=1.0, seed=seed)
    found = _cosines(network, batch, [AsymEP(1e-4, precise_engine),
                                      VectorFieldEP(1e-4, precise_engine)], precise_engine)
    assert found["asym"] - found["vf"] > 0.05, found
