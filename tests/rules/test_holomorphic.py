"""Holomorphic EP: exact for finite radius r on analytic models (gradient check)."""

import pytest
import torch

from neuroeq import Readout, TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.rules import HolomorphicEP, ImplicitDifferentiation, make_rule
from tests.conftest import make_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _errors(model, rules, engine, sizes=(20, 16, 5), seed=0):
    network, batch = make_problem(model, sizes, seed=seed)
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False).flat(names)
    out = []
    for rule in rules:
        found = rule.estimate(network, batch, free=free, write_grad=False).flat(names)
        out.append(float((found - true).norm() / true.norm()))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_holomorphic_ep_at_r_half_beats_centered_ep_at_small_beta(seed, precise_engine):
    # FHN (skew-gradient, tanh rate): r = 0.5 lies well inside the radius of analyticity
    holomorphic, centered = _errors(
        "fhn", [HolomorphicEP(0.5, precise_engine, points=16),
                make_rule("centered", beta=1e-3, engine=precise_engine,
                          model_class="skew_gradient")], precise_engine, seed=seed)
    assert holomorphic <= centered, (holomorphic, centered)
    assert holomorphic < 1e-9


def test_holomorphic_ep_error_falls_geometrically_with_points(precise_engine):
    # error O((r/R)^N): more points on the same circle, smaller error (hopfield_smooth,
    # whose radius of analyticity here is about 0.4: bench/holomorphic_radius.py, so r = 0.1)
    errors = _errors("hopfield_smooth", [HolomorphicEP(0.1, precise_engine, points=n)
                                         for n in (4, 8, 16)], precise_engine)
    assert errors[0] > 30 * errors[1] > 0
    assert errors[2] < 1e-9, errors


def test_two_points_is_centered_ep(precise_engine):
    network, batch = make_problem("hopfield_smooth", (6, 5, 3))
    with torch.no_grad():
        free = precise_engine.relax(network, batch[0])
    two = HolomorphicEP(1e-2, precise_engine, points=2).estimate(network, batch, free=free,
                                                                 write_grad=False)
    centered = make_rule("centered", beta=1e-2, engine=precise_engine).estimate(
        network, batch, free=free, write_grad=False)
    for name in centered.grads:
        torch.testing.assert_close(two.grads[name], centered.grads[name], rtol=1e-7,
                                   atol=1e-12)


@pytest.mark.parametrize("model, coupling, message", [
    ("hopfield", "symmetric", "clamps"), ("spiking_rate", "symmetric", "general"),
    ("hopfield_smooth", "asymmetric", "symmetric coupling"),
])
def test_holomorphic_ep_refuses_non_analytic_or_non_conservative(model, coupling, message):
    network, batch = make_problem(model, (6, 5, 3), coupling=coupling)
    with pytest.raises(ConfigError, match=message):
        HolomorphicEP(0.5).estimate(network, batch)


def test_bad_radius():
    with pytest.raises(ConfigError, match="radius"):
        HolomorphicEP(0.0)
    with pytest.raises(ConfigError, match="points"):
        HolomorphicEP(0.5, points=1)


@pytest.mark.parametrize("kind, cost", [("linear", "mse"), ("identity", "cross_entropy"),
                                        ("linear", "cross_entropy")])
def test_holomorphic_ep_is_exact_through_every_readout_and_cost(kind, cost, precise_engine):
    # the complex nudged phases carry the readout's products and the softmax's analytic
    # continuation; the estimate still matches implicit differentiation
    n_classes = 3 if kind == "linear" else 5
    network, (x, _) = make_problem("fhn", (20, 16, 5), seed=2, readout=Readout(
        5, n_classes, kind=kind, cost=cost, seed=2))
    y = torch.tensor([0, 2, 1, 2]) % n_classes
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = precise_engine.relax(network, x)
    true = ImplicitDifferentiation(precise_engine).estimate(network, (x, y), free=free,
                                                            write_grad=False).flat(names)
    found = HolomorphicEP(0.5, precise_engine, points=16).estimate(
        network, (x, y), free=free, write_grad=False).flat(names)
    assert float((found - true).norm() / true.norm()) < 1e-8


def test_a_fixed_budget_runs_the_complex_phases_without_a_tolerance(precise_engine):
    # tol = 0 (training protocols' fixed budgets) runs the nudged steps and estimates (it
    # used to raise "did not settle"): the same estimate as phases relaxed to tol 1e-12
    network, batch = make_problem("hopfield_smooth", (6, 5, 3))
    with torch.no_grad():
        free = precise_engine.relax(network, batch[0])
    fixed = HolomorphicEP(0.1, TorchEngine(tol=0.0, max_steps=3000), points=8).estimate(
        network, batch, free=free, write_grad=False)
    precise = HolomorphicEP(0.1, precise_engine, points=8).estimate(network, batch, free=free,
                                                                    write_grad=False)
    for name, value in precise.grads.items():
        torch.testing.assert_close(fixed.grads[name], value, rtol=1e-9, atol=1e-12)


def test_complex_phases_that_do_not_settle_follow_the_engines_failure_policy():
    """Training with on_nonconvergence = "continue" counts such a batch as unsettled and
    uses it, as it does for every other rule; an engine that raises still raises."""
    import warnings

    from neuroeq.errors import RelaxationError

    network, batch = make_problem("hopfield_smooth", (6, 5, 3))
    short = dict(tol=1e-12, max_steps=20, check_every=10)
    with pytest.raises(RelaxationError, match="complex nudged phases .* did not settle"):
        HolomorphicEP(0.5, TorchEngine(**short), points=4).estimate(
            network, batch, free=TorchEngine().relax(network, batch[0]), write_grad=False)
    rule = HolomorphicEP(0.5, TorchEngine(**short, on_failure="ignore"), points=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate = rule.estimate(network, batch, free=TorchEngine().relax(network, batch[0]),
                                 write_grad=False)
    assert estimate.nudged["complex"].failure is not None
    assert not bool(estimate.nudged["complex"].converged.any())


@pytest.mark.parametrize("model", ["hopfield_smooth", "fhn"])
def test_the_default_radius_lies_inside_the_models_radius_of_analyticity(model, precise_engine):
    # r = 0.5, the earlier default, left a 0.14 relative error on hopfield_smooth
    rule = HolomorphicEP(engine=precise_engine)
    assert rule.beta == 0.1 and rule.points == 16
    (error,) = _errors(model, [rule], precise_engine, sizes=(4, 6, 3))
    assert error < 1e-8
