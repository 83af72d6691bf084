"""The three oracles (implicit differentiation, BPTT, finite differences) agree."""

import pytest
import torch

from neuroeq.errors import ConfigError
from neuroeq.rules import BPTT, FiniteDifferences, ImplicitDifferentiation
from tests.conftest import cosine, make_problem


@pytest.mark.parametrize("model", ["hopfield_smooth", "fhn", "hopfield", "spiking_rate"])
@pytest.mark.parametrize("sizes", [(20, 16, 5), (20, 16, 16, 5)])
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric", "feedforward"])
@pytest.mark.parametrize("seed", [0, 1])
def test_oracles_agree(model, sizes, coupling, seed, precise_engine):
    if model in ("hopfield", "spiking_rate") and (len(sizes) > 3 or seed > 0):
        pytest.skip("the clipped-rate models are covered on one size and seed")
    network, batch = make_problem(model, sizes, coupling, seed=seed)
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = precise_engine.relax(network, batch[0])
    results = {}
    for oracle in (ImplicitDifferentiation(precise_engine), BPTT(precise_engine),
                   FiniteDifferences(precise_engine)):
        results[oracle.name] = oracle.estimate(network, batch, free=free,
                                               write_grad=False).flat(names)
    assert results["implicit"].norm() > 0
    assert cosine(results["bptt"], results["implicit"]) >= 0.999999
    assert cosine(results["fd"], results["implicit"]) >= 0.999999
    assert cosine(results["fd"], results["bptt"]) >= 0.999999
    # the scale too (a factor in one oracle has cosine 1); finite differences do not share
    # the implicit oracle's vector-Jacobian products, so they check those as well
    for name, tolerance in (("bptt", 1e-6), ("fd", 1e-5)):
        error = (results[name] - results["implicit"]).norm() / results["implicit"].norm()
        assert float(error) < tolerance, (name, float(error))


def test_oracle_writes_param_grad(precise_engine):
    network, batch = make_problem("hopfield_smooth")
    estimate = ImplicitDifferentiation(precise_engine).estimate(network, batch)
    for name, param in network.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(param.grad, estimate.grads[name])


@pytest.mark.parametrize("make, message", [
    (lambda: BPTT(steps=0), "BPTT steps must be a whole number of at least 1, got 0"),
    (lambda: FiniteDifferences(h=float("inf")), "finite-difference step h must be a positive"),
    (lambda: FiniteDifferences(chunk=0), "finite-difference chunk must be a whole number"),
])
def test_bad_oracle_settings_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_the_oracles_agree_with_an_accelerated_solver_and_in_float32():
    """BPTT relaxes as many Euler steps as the dynamics need whatever solver found the free
    state (an Anderson count of map evaluations once left it at 32 % error), and finite
    differences take a step that float32's tolerance allows (1e-5 left FHN at 41 %)."""
    from neuroeq import Network, TorchEngine
    from neuroeq.engines.settings import gradient_check_tolerance
    from neuroeq.rules import BPTT, FiniteDifferences, ImplicitDifferentiation

    def relative_errors(network, engine, rules):
        generator = torch.Generator().manual_seed(10_000)
        x = torch.rand(3, network.sizes[0], generator=generator, dtype=network.dtype)
        y = torch.randint(0, network.sizes[-1], (3,), generator=generator)
        names = [n for n, _ in network.named_parameters()]
        with torch.no_grad():
            free = engine.relax(network, x)
        true = ImplicitDifferentiation(engine).estimate(network, (x, y), free=free,
                                                        write_grad=False).flat(names).double()
        return [float((rule(engine).estimate(network, (x, y), free=free, write_grad=False)
                       .flat(names).double() - true).norm() / true.norm()) for rule in rules]

    slow = Network("linear", (6, 5, 3), gain=1.42, seed=0)  # 1,970 Euler steps to 1e-12
    anderson = TorchEngine(tol=1e-12, max_steps=100_000, solver="anderson")
    assert relative_errors(slow, anderson, [BPTT])[0] < 1e-8
    fhn = Network("fhn", (6, 5, 3), seed=0, dtype=torch.float32)
    engine = TorchEngine(tol=gradient_check_tolerance("float32"), max_steps=100_000)
    fd, bptt = relative_errors(fhn, engine, [FiniteDifferences, BPTT])
    assert fd < 2e-2 and bptt < 1e-4


def test_finite_differences_take_a_step_fitting_the_engines_tolerance(precise_engine):
    # O(tol/h): the model file's tol (1e-6) with float64's step 1e-5 left a 4e-3 error
    from neuroeq import TorchEngine
    from neuroeq.rules.oracles import default_step

    network, batch = make_problem("hopfield_smooth", (4, 5, 3), seed=0)
    true = ImplicitDifferentiation(precise_engine).estimate(network, batch, write_grad=False)
    loose = FiniteDifferences(TorchEngine(tol=1e-6, max_steps=100000)).estimate(
        network, batch, write_grad=False)
    error = (loose.flat() - true.flat()).norm() / true.flat().norm()
    assert float(error) < 1e-3
    assert default_step(torch.float64, 1e-12) == pytest.approx(1e-5)
    assert default_step(torch.float64, 1e-6) == pytest.approx(1e-3)
    assert default_step(torch.float32, 1e-5) == 1e-2 and default_step(torch.float64, 0.0) == 1e-5
