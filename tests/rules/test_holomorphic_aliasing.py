"""Holomorphic EP reports its own aliasing (the N- against the N/2-point estimate on every
other node) and warns where r is too large for the model's radius of analyticity."""

import warnings

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.rules import HolomorphicEP, ImplicitDifferentiation


def _oscillator_problem():
    """A net whose radius of analyticity is about 0.03: r = 0.1 is beyond it."""
    network = Network("oscillator", (3, 4, 3, 2), coupling="symmetric", lateral=True,
                      skip=True, seed=0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(77)
    with torch.no_grad():
        for bias in network.biases.values():
            bias.add_(0.3 * (torch.rand(bias.shape, generator=generator,
                                        dtype=torch.float64) - 0.5))
    x = torch.rand(1, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (1,), generator=generator)
    engine = TorchEngine(tol=1e-13, max_steps=400000)
    with torch.no_grad():
        free = engine.relax(network, x)
    return network, (x, y), engine, free


def _error(estimate, true, names):
    return float((estimate.flat(names) - true).norm() / true.norm())


def test_a_radius_beyond_analyticity_is_warned_about_and_a_small_one_is_not():
    network, batch, engine, free = _oscillator_problem()
    names = [name for name, _ in network.named_parameters()]
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free,
                                                    write_grad=False).flat(names)
    with pytest.warns(RuntimeWarning, match="radius where s_beta is analytic"):
        wide = HolomorphicEP(0.1, engine, points=16).estimate(network, batch, free=free,
                                                              write_grad=False)
    assert _error(wide, true, names) > 0.1  # the case the warning is for
    assert wide.diagnostics["aliasing"] > 0.03
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        narrow = HolomorphicEP(0.01, engine, points=16).estimate(network, batch, free=free,
                                                                 write_grad=False)
    assert _error(narrow, true, names) < 1e-8
    assert narrow.diagnostics["aliasing"] < 1e-3


def test_the_aliasing_figure_is_the_difference_to_the_half_point_rule():
    network, batch, engine, free = _oscillator_problem()
    names = [name for name, _ in network.named_parameters() if not name.startswith("readout")]
    sixteen = HolomorphicEP(0.01, engine, points=16).estimate(network, batch, free=free,
                                                              write_grad=False)
    eight = HolomorphicEP(0.01, engine, points=8).estimate(network, batch, free=free,
                                                           write_grad=False)
    dynamics = [name for name in names if name in sixteen.grads]
    fine, coarse = sixteen.flat(dynamics), eight.flat(dynamics)
    expected = float((fine - coarse).norm() / fine.norm())
    assert sixteen.diagnostics["aliasing"] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_an_odd_number_of_points_reports_no_aliasing():
    network, batch, engine, free = _oscillator_problem()
    estimate = HolomorphicEP(0.01, engine, points=5).estimate(network, batch, free=free,
                                                              write_grad=False)
    assert "aliasing" not in estimate.diagnostics


def test_the_aliasing_warning_comes_once_per_rule_while_each_estimate_reports_it():
    """The figure in the warning changes with each batch, so Python's filter alone would
    repeat it at every training step: the rule says it once, and its diagnostics each time."""
    network, batch, engine, free = _oscillator_problem()
    rule = HolomorphicEP(0.1, engine, points=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimates = [rule.estimate(network, batch, free=free, write_grad=False)
                     for _ in range(3)]
    aliasing = [w for w in caught if "radius where s_beta is analytic" in str(w.message)]
    assert len(aliasing) == 1
    assert all(e.diagnostics["aliasing"] > 0.03 for e in estimates)
    with pytest.warns(RuntimeWarning, match="radius where s_beta is analytic"):  # a new rule
        HolomorphicEP(0.1, engine, points=16).estimate(network, batch, free=free,
                                                       write_grad=False)
