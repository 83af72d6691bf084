"""Finite-nudge and path-integral EP against the exact free-energy gradient of a Gaussian
(linear) network, within the Monte Carlo error the estimators report."""

import pytest
import torch

from neuroeq import Network
from neuroeq.engines.langevin import LangevinSampler
from neuroeq.errors import ConfigError
from neuroeq.gibbs_check import exact_gradient, free_energy
from neuroeq.rules import FiniteNudgeEP, PathIntegralEP, make_rule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _problem(seed=0, sizes=(3, 4, 2), batch=2):
    network = Network("linear", sizes, seed=seed, gain=0.5)
    generator = torch.Generator().manual_seed(50 + seed)
    x = torch.rand(batch, sizes[0], generator=generator, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator)
    return network, (x, y)


def _z_scores(estimate, exact, names):
    found = torch.cat([estimate.grads[n].reshape(-1) for n in names])
    stderr = torch.cat([estimate.stderr[n].reshape(-1) for n in names])
    reference = torch.cat([exact[n].reshape(-1) for n in names])
    return (found - reference) / stderr, (-found - reference) / stderr, stderr, reference


@pytest.mark.parametrize("rule_class", [FiniteNudgeEP, PathIntegralEP])
@pytest.mark.parametrize("beta, temperature", [(1.0, 0.1), (0.3, 0.02)])
def test_estimator_matches_exact_free_energy_gradient(rule_class, beta, temperature):
    network, (x, y) = _problem()
    names = sorted(n for n, _ in network.named_parameters())
    exact = exact_gradient(network, x, y, beta, temperature)
    rule = rule_class(beta, temperature=temperature, chains=512, groups=16, seed=1)
    estimate = rule.estimate(network, (x, y), write_grad=False)
    z, flipped, stderr, reference = _z_scores(estimate, exact, names)
    # unbiased within its reported Monte Carlo error (seeded, so this is deterministic) ...
    assert float(z.abs().max()) < 4.5, z
    assert float(z.pow(2).mean().sqrt()) < 2.0
    # ... and precise enough that a sign error could not pass
    assert float(stderr.norm() / reference.norm()) < 0.15
    assert float(flipped.abs().max()) > 10


def test_finite_nudge_is_not_the_deterministic_infinitesimal_gradient():
    # at beta = 1 the exact objective (A(1) - A(0)) differs from dC/dtheta at s*: the
    # estimator must follow the former
    network, (x, y) = _problem()
    names = sorted(n for n, _ in network.named_parameters())
    exact = exact_gradient(network, x, y, 1.0, 0.1)
    rule = make_rule("finite_nudge", beta=1.0, temperature=0.1, chains=512, seed=2)
    estimate = rule.estimate(network, (x, y), write_grad=False)
    infinitesimal = make_rule("implicit").estimate(network, (x, y), write_grad=False)
    z_exact, _, _, _ = _z_scores(estimate, exact, names)
    z_small, _, _, _ = _z_scores(estimate, infinitesimal.grads, names)
    assert float(z_exact.abs().max()) < 4.5
    assert float(z_small.abs().max()) > 10


def test_free_energy_derivative_in_beta_is_the_mean_loss():
    # dA/dbeta = <C>_beta, checked against Metropolis-adjusted Langevin samples
    network, (x, y) = _problem()
    beta, temperature, h = 0.5, 0.1, 1e-5
    with torch.no_grad():  # a number here, not a graph through the parameters
        slope = (free_energy(network, x, y, beta + h, temperature)
                 - free_energy(network, x, y, beta - h, temperature)) / (2 * h)
    sampler = LangevinSampler(temperature, chains=512, seed=3)
    samples = sampler.sample(network, x, y=y, betas=[beta])
    with torch.no_grad():  # the readout's parameters need no graph here
        cost = network.cost(samples.states[0], y).mean(-1)  # (sample, chain)
    per_chain = cost.mean(0)
    stderr = per_chain.std() / per_chain.numel() ** 0.5
    assert abs(float(per_chain.mean()) - float(slope)) < 4 * float(stderr)


def test_sampler_is_seeded():
    network, (x, y) = _problem()
    a = LangevinSampler(0.1, chains=4, burn_in=10, samples=2, seed=5).sample(network, x)
    b = LangevinSampler(0.1, chains=4, burn_in=10, samples=2, seed=5).sample(network, x)
    c = LangevinSampler(0.1, chains=4, burn_in=10, samples=2, seed=6).sample(network, x)
    assert torch.equal(a.states, b.states) and not torch.equal(a.states, c.states)


def test_gibbs_rules_refuse_what_they_cannot_do():
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        FiniteNudgeEP(1.5)
    with pytest.raises(ConfigError, match="temperature"):
        FiniteNudgeEP(0.5, temperature=0.0)
    with pytest.raises(ConfigError, match="multiple of groups"):
        PathIntegralEP(0.5, chains=10, groups=4)
    fhn = Network("fhn", (3, 4, 2))
    x, y = torch.rand(2, 3, dtype=torch.float64), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="gradient model"):
        FiniteNudgeEP(0.5, chains=4, groups=2).estimate(fhn, (x, y))
    asymmetric = Network("linear", (3, 4, 2), coupling="asymmetric", gain=0.5)
    with pytest.raises(ConfigError, match="symmetric coupling"):
        FiniteNudgeEP(0.5, chains=4, groups=2).estimate(asymmetric, (x, y))


def test_bounded_model_samples_stay_in_the_box_and_gradients_land_in_param_grad():
    network = Network("hopfield", (3, 4, 2), seed=1)
    x, y = torch.rand(2, 3, dtype=torch.float64), torch.tensor([0, 1])
    rule = FiniteNudgeEP(0.5, temperature=0.05, chains=8, groups=4, burn_in=20, samples=2,
                         thin=2)
    with torch.no_grad():
        estimate = rule.estimate(network, (x, y))
    samples = rule.sampler.sample(network, x, y=y, betas=[0.0, 0.5])
    assert float(samples.states.min()) >= 0.0 and float(samples.states.max()) <= 1.0
    assert 0 < float(samples.acceptance.min()) <= 1
    torch.testing.assert_close(network.weights["W1"].grad, estimate.grads["weights.W1"])
    assert float(network.weights["W1"].grad.abs().sum()) > 0


@pytest.mark.parametrize("options, message", [
    ({"temperatures": (0.0,)}, "temperature 0.0 must be a positive number"),
    ({"temperatures": (0.1, -1.0)}, "temperature -1.0 must be a positive number"),
    ({"betas": (1.5,)}, r"beta 1.5 must lie in \(0, 1\]"),
    ({"betas": (0.0,)}, r"beta 0.0 must lie in \(0, 1\]"),
])
def test_the_gibbs_check_refuses_bad_settings_before_sampling(options, message, monkeypatch):
    from neuroeq import gibbs_check

    monkeypatch.setattr(gibbs_check, "exact_gradient", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ConfigError, match=message):
        gibbs_check.gibbs_check(chains=4, **options)


def test_the_free_energy_needs_a_positive_temperature():
    network = Network("linear", (3, 4, 2), coupling="symmetric", seed=0, gain=0.5)
    x, y = torch.rand(2, 3, dtype=network.dtype), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="temperature 0.0 must be a positive number"):
        free_energy(network, x, y, 0.5, 0.0)


@pytest.mark.parametrize("points", [1, 2, 6])
def test_both_rules_report_the_cost_under_the_free_distribution(points):
    # the loss is <C> at beta = 0 whatever the quadrature (its first node lies at
    # beta (1 + n_0) / 2, which gave 0.37 / 0.53 / 0.70 for 1 / 2 / 6 points, not 0.74)
    network, (x, y) = _problem()
    options = dict(temperature=0.2, chains=256, seed=4)
    finite = FiniteNudgeEP(1.0, **options).estimate(network, (x, y), write_grad=False)
    path = PathIntegralEP(1.0, points=points, **options).estimate(network, (x, y),
                                                                   write_grad=False)
    sampler = LangevinSampler(0.2, chains=256, seed=11)
    free = network.cost(sampler.sample(network, x, y=y, betas=[0.0]).states[0], y)
    per_chain = free.mean(-1).mean(0)
    stderr = float(per_chain.std()) / per_chain.numel() ** 0.5
    for loss in (finite.loss, path.loss):
        assert abs(loss - float(per_chain.mean())) < 5 * stderr + 1e-12
    assert path.loss == pytest.approx(finite.loss, rel=0.05)
