"""Network specification: couplings, energies, seeding, readout gradients."""

import pytest
import torch

from neuroeq import ConfigError, Network, Readout
from tests.conftest import make_problem


@pytest.mark.parametrize("model", ["hopfield", "hopfield_smooth", "fhn"])
@pytest.mark.parametrize("lateral, skip", [(False, False), (True, True)])
def test_dynamics_are_minus_q_grad_energy(model, lateral, skip):
    network, (x, _) = make_problem(model, (6, 5, 4, 3), lateral=lateral, skip=skip)
    state = (0.3 * torch.randn(4, network.state_size, dtype=torch.float64) + 0.5)
    state.requires_grad_(True)
    (grad,) = torch.autograd.grad(network.energy(state, x).sum(), state)
    q = network.model.q_values()
    Q = torch.cat([torch.full((b.stop - b.start,), q[b.variable], dtype=torch.float64)
                   for b in network.blocks])
    velocity = network.velocity(state.detach(), network.drive(x))
    torch.testing.assert_close(velocity, -Q * grad / network.tau, rtol=1e-9, atol=1e-6)


def test_asymmetry_interpolates_backward_weights():
    symmetric_start = Network("hopfield_smooth", (5, 4, 3), coupling="asymmetric", alpha=0.0)
    torch.testing.assert_close(symmetric_start.weights["BW2"].data,
                               symmetric_start.weights["W2"].data.T)
    random = Network("hopfield_smooth", (5, 4, 3), coupling="asymmetric", alpha=1.0)
    assert not torch.allclose(random.weights["BW2"].data, random.weights["W2"].data.T)


def test_feedforward_has_no_backward_projection():
    network = Network("hopfield_smooth", (5, 4, 3), coupling="feedforward")
    assert all(edge.kind != "backward" for edge in network.edges)
    assert set(network.weights) == {"W1", "W2"}


def test_seed_makes_weights_reproducible():
    a = Network("fhn", (5, 4, 3), seed=7)
    b = Network("fhn", (5, 4, 3), seed=7)
    c = Network("fhn", (5, 4, 3), seed=8)
    torch.testing.assert_close(a.weights["W1"].data, b.weights["W1"].data)
    assert not torch.equal(a.weights["W1"].data, c.weights["W1"].data)


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": (5,)}, "at least"), ({"sizes": (5, 0, 3)}, "positive"),
    ({"coupling": "diagonal"}, "coupling"), ({"alpha": 1.5}, "alpha"),
    ({"gain": -1.0}, "gain"), ({"dtype": torch.int64}, "dtype"),
    ({"sizes": (5.7, 4, 3)}, r"a layer size must be a whole number, got 5.7"),
    ({"sizes": 5}, "must be a sequence of layer sizes"),
    ({"bias_init": float("nan")}, "bias_init must be a finite number, got nan"),
    ({"readout": Readout(5)}, "the readout reads 5 output units; the network's output layer "
                              "has 3"),
])
def test_bad_network_settings(kwargs, message):
    options = {"sizes": (5, 4, 3), **kwargs}
    sizes = options.pop("sizes")
    with pytest.raises(ConfigError, match=message):
        Network("hopfield_smooth", sizes, **options)


@pytest.mark.parametrize("kind, cost", [("identity", "mse"), ("identity", "cross_entropy"),
                                        ("linear", "mse"), ("linear", "cross_entropy")])
def test_readout_cost_gradient_is_the_autograd_gradient(kind, cost):
    readout = Readout(5, 5 if kind == "identity" else 3, kind=kind, cost=cost)
    rates = torch.rand(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    # float targets whose rows do not sum to 1 (soft or multi-label targets), in float32
    soft = torch.tensor([[0.2, 0.3, 0.1], [0.9, 0.4, 0.0], [0.1, 0.1, 0.1], [0.0, 0.0, 2.0]])
    soft = torch.cat([soft, soft[:, :2]], 1) if readout.n_classes == 5 else soft
    for y in (labels, soft):
        (expected,) = torch.autograd.grad(readout.cost(rates, y).sum(), rates)
        torch.testing.assert_close(readout.cost_gradient(rates.detach(), y), expected)


@pytest.mark.parametrize("model", ["hopfield_smooth", "oscillator"])
def test_energy_with_a_precomputed_drive_is_the_energy(model):
    # the Langevin sampler passes the input currents W x once instead of x every step
    network = Network(model, (7, 5, 4), seed=0, lateral=True, skip=True, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    state = torch.rand(3, network.state_size, generator=generator, dtype=torch.float64)
    full = network.energy(state, x)
    assert torch.allclose(network.energy(state, x, drive=network.drive(x)), full, atol=1e-12)
    # the drive is really used: a different one gives a different energy
    assert not torch.allclose(network.energy(state, x, drive=network.drive(2 * x)), full)


@pytest.mark.parametrize("make_x, message", [
    (lambda: torch.rand(0, 8), r"holds no samples \(an empty batch\)"),
    (lambda: torch.rand(4, 6), "input has 6 features, the network expects 8"),
])
def test_an_input_of_the_wrong_size_is_named(make_x, message):
    network = Network("hopfield", (8, 6, 3), seed=0)
    with pytest.raises(ConfigError, match=message):
        network.drive(make_x())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_input_that_is_not_finite_is_rejected_naming_the_samples(value, dtype):
    """Bad data is named as bad data before the dynamics run (not as a relaxation that
    went NaN), for every sample that holds it, in either network dtype."""
    network = Network("hopfield", (8, 6, 3), seed=0, dtype=dtype)
    x = torch.rand(5, 8, dtype=torch.float64)
    network.drive(x)  # a good input passes
    x[1, 0] = value
    x[4, 7] = value
    with pytest.raises(ConfigError, match=r"NaN or inf values in samples \[1, 4\]"):
        network.drive(x)


@pytest.mark.parametrize("kind, classes", [("identity", 3), ("linear", 4)])
def test_labels_and_targets_must_fit_the_readout(kind, classes):
    readout = Readout(3, classes, kind=kind)
    like = torch.empty(0, dtype=torch.float64)
    good = torch.tensor([0, classes - 1, 1])
    assert readout.targets(good, like).shape == (3, classes)
    for bad, shown in ((classes, classes), (-1, -1)):
        labels = torch.tensor([0, bad, 1, bad])
        with pytest.raises(ConfigError, match=rf"\[0, {classes}\); got {shown} "
                                              r"\(samples \[1, 3\]"):
            readout.targets(labels, like)
    assert readout.targets(torch.rand(2, classes), like).shape == (2, classes)
    with pytest.raises(ConfigError, match=f"must have {classes} columns"):
        readout.targets(torch.rand(2, classes + 1), like)


def test_a_bad_batch_is_named_by_the_rule_before_any_phase():
    from neuroeq import TorchEngine
    from neuroeq.rules import ClassicEP

    network = Network("hopfield", (8, 6, 3), seed=0)
    rule = ClassicEP(beta=0.5, engine=TorchEngine(tol=0.0, max_steps=5))
    x = torch.rand(4, 8)
    with pytest.raises(ConfigError, match="got 3"):
        rule.estimate(network, (x, torch.tensor([0, 1, 2, 3])))
    x[2, 3] = float("nan")
    with pytest.raises(ConfigError, match=r"samples \[2\]"):
        rule.estimate(network, (x, torch.tensor([0, 1, 2, 0])))
    x[2, 3] = 0.5
    with pytest.raises(ConfigError, match=r"y \(4, 1\) must be .* \(batch,\) for class labels"):
        rule.estimate(network, (x, torch.tensor([[0], [1], [2], [0]])))
    targets = torch.eye(3)[[0, 1, 2, 0]]
    targets[1, 0] = float("inf")
    with pytest.raises(ConfigError, match=r"targets y hold NaN or inf values in samples \[1\]"):
        rule.estimate(network, (x, targets))
    with pytest.raises(ConfigError, match="complex x"):
        rule.estimate(network, (x.to(torch.complex64), torch.tensor([0, 1, 2, 0])))
    with pytest.raises(ConfigError, match="batch part y must be a tensor or an array"):
        rule.estimate(network, (x, ["a", "b", "c", "d"]))
    for batch, what in ((x, r"a tensor of shape \(4, 8\)"), (x[:2], "a tensor of shape"),
                        ({"x": x, "y": targets}, "a dict"), ((x,), "a tuple of 1")):
        with pytest.raises(ConfigError, match=r"must be a pair \(x, y\).*, got " + what):
            rule.estimate(network, batch)
    with pytest.raises(ConfigError, match=r"holds torch.float32 values: class labels must "
                                          r"be integers \(y.long\(\)\)"):
        rule.estimate(network, (x, torch.tensor([0.0, 1.0, 2.0, 0.0])))
    with torch.no_grad():
        other_batch = rule.engine.relax(network, x[:3])
    with pytest.raises(ConfigError, match=r"free phase given has states of shape \(3, 9\), "
                                          r"not \(batch 4, 9 state variables\)"):
        rule.estimate(network, (x, torch.tensor([0, 1, 2, 0])), free=other_batch)
    assert all(p.grad is None for p in network.parameters())  # nothing written
    rule.estimate(network, (x.numpy(), [0, 1, 2, 0]))  # arrays and lists are converted
    assert all(p.grad is not None for p in network.parameters())


BRIAN2_HOOK_SCRIPT = """
import sys
import warnings
{first}
hook = sys.excepthook
from neuroeq import Network
Network("hopfield", (4, 3, 2))
from neuroeq.engines.brian2_common import configure_brian2
configure_brian2("numpy")
print("kept" if sys.excepthook is hook else "replaced")
print("brian2's" if sys.excepthook.__module__.startswith("brian2") else "not brian2's")
warnings.warn("a plain warning")
Network("hopfield", (4, 3, 2), sizes_typo=1)
"""


@pytest.mark.parametrize("first, hook", [("", "not brian2's"),
                                         ("import brian2", "brian2's")])
def test_an_error_in_a_script_is_not_reported_as_a_brian2_bug(first, hook):
    """neuroeq imports Brian2 by itself; Brian2's process-wide exception hook (which calls
    any uncaught error an unexpected Brian 2 error to report to its developers) is put
    back as it was, unless the script imported Brian2 itself; so is Python's warning
    display (Brian2 routes warnings into its log, printed as ``WARNING ... [py.warnings]``)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", BRIAN2_HOOK_SCRIPT.format(first=first)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout.split("\n")[:2] == ["kept", hook]
    assert "sizes_typo" in done.stderr
    assert ("Brian 2 encountered an unexpected error" in done.stderr) == (hook == "brian2's")
    assert "UserWarning: a plain warning" in done.stderr
    assert ("[py.warnings]" in done.stderr) == (hook == "brian2's"), done.stderr


SIGINT_SCRIPT = """
import signal, threading
{setup}
from neuroeq.brian2_import import import_brian2
{call}
import brian2
print(signal.getsignal(signal.SIGINT) is {expected})
"""


@pytest.mark.parametrize("setup, call, expected", [
    # Ctrl+C raises KeyboardInterrupt, not Brian2's "stop the simulation after this step"
    ("", "import_brian2()", "signal.default_int_handler"),
    # a background job started with SIGINT ignored keeps ignoring it
    ("signal.signal(signal.SIGINT, signal.SIG_IGN)", "import_brian2()", "signal.SIG_IGN"),
    # a worker thread may not install handlers: the import skips Brian2's
    ("", "t = threading.Thread(target=import_brian2); t.start(); t.join()",
     "signal.default_int_handler"),
])
def test_brian2_leaves_the_ctrl_c_handler_as_it_was(setup, call, expected):
    import subprocess
    import sys

    script = SIGINT_SCRIPT.format(setup=setup, call=call, expected=expected)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_a_relaxation_names_a_start_or_an_input_of_the_wrong_shape():
    from neuroeq import TorchEngine

    network = Network("fhn", (8, 6, 3), seed=0)  # two variables: 18 state columns
    engine = TorchEngine(max_steps=3, tol=0.0)
    x = torch.rand(4, 8, dtype=torch.float64)
    for init in (torch.zeros(4, 5), torch.zeros(3, 18), torch.zeros(18)):
        with pytest.raises(ConfigError, match=r"init has shape .* needs \(4, 18\) .* for 4 "
                                              "samples"):
            engine.relax(network, x, init=init)
    with pytest.raises(ConfigError, match=r"init must be a state tensor of shape \(4, 18\) "
                                          r".* or a phase's result \(RelaxResult\), got list"):
        engine.relax(network, x, init=[0.0] * 18)
    # a start of another float dtype is taken in the network's; a phase's result is its state
    free = engine.relax(network, x, init=torch.zeros(4, 18))
    assert free.state.dtype == torch.float64
    torch.testing.assert_close(engine.relax(network, x, init=free).state,
                               engine.relax(network, x, init=free.state).state)
    with pytest.raises(ConfigError, match=r"must be \(batch, 8\): a single sample is x\[None\]"):
        engine.relax(network, x[0])


def test_the_gibbs_sampler_names_a_start_of_the_wrong_shape_and_takes_a_phase_result():
    from neuroeq import TorchEngine
    from neuroeq.engines.langevin import LangevinSampler

    network = Network("linear", (4, 3, 2), seed=0)
    x = torch.rand(2, 4, dtype=torch.float64)
    free = TorchEngine().relax(network, x)

    def sampler():
        return LangevinSampler(temperature=0.05, burn_in=5, samples=3, thin=2, chains=2, seed=0)

    with pytest.raises(ConfigError, match=r"init has shape \(3, 5\); the sampler needs "
                                          r"\(2, 5\)"):
        sampler().sample(network, x, init=torch.zeros(3, 5))
    torch.testing.assert_close(sampler().sample(network, x, init=free).states,
                               sampler().sample(network, x, init=free.state).states)


def test_a_rule_names_an_option_it_does_not_take():
    from neuroeq.rules import NUDGED_RULES, ORACLES, PathIntegralEP, make_rule, rule_options

    with pytest.raises(ConfigError, match="rule 'ep' has no option 'betaa'; its options: "
                                          "beta, engine, nudged_steps, random_sign, seed"):
        make_rule("ep", betaa=0.1)
    with pytest.raises(ConfigError, match="rule 'fd' has no option 'beta_'"):
        make_rule("fd", beta_=1)
    # options passed on to a parent class (**options) count as the rule's own
    assert {"points", "chains", "temperature"} <= set(rule_options(NUDGED_RULES["path_integral"]))
    assert rule_options("path_integral") == rule_options(NUDGED_RULES["path_integral"])
    assert isinstance(make_rule("path_integral", beta=0.5, points=3, chains=32),
                      PathIntegralEP)
    for rule in (*NUDGED_RULES.values(), *ORACLES.values()):  # every listed option is real
        assert "engine" in rule_options(rule)


@pytest.mark.parametrize("seed", ["1", 1.5, 2.0, True, None, -1, 2**32])
def test_a_seed_that_is_not_a_whole_number_is_named(seed):
    from neuroeq.engines.brian2_spiking import SpikingEngine
    from neuroeq.rules import ClassicEP, FiniteNudgeEP

    for make, where in ((lambda: Network("hopfield", (4, 3, 2), seed=seed), "network seed"),
                        (lambda: Readout(3, 4, kind="linear", seed=seed), "readout seed"),
                        (lambda: ClassicEP(0.5, random_sign=True, seed=seed), "rule seed"),
                        (lambda: FiniteNudgeEP(0.5, seed=seed), "sampler seed"),
                        (lambda: SpikingEngine(seed=seed), "spiking engine seed")):
        with pytest.raises(ConfigError, match=rf"{where} must be (a whole number( of at least "
                                              r"0)?, got|at most 4,294,967,295)"):
            make()


def test_a_numpy_integer_seed_is_taken_as_an_int():
    import numpy as np

    network = Network("hopfield", (4, 3, 2), seed=np.int64(3))
    assert type(network.seed) is int
    assert torch.equal(network.weights["W1"], Network("hopfield", (4, 3, 2), seed=3).weights["W1"])


@pytest.mark.parametrize("model, values", [("hopfield", {"s": 0.0}),
                                           ("fhn", {"v": -1.0, "w": -0.6})])
def test_the_initial_state_holds_the_model_values(model, values):
    """One fill where every variable starts at one value, block by block otherwise."""
    network = Network(model, (5, 4, 3), seed=0)
    state = network.initial_state(6, leading=(2,))
    assert state.shape == (2, 6, network.state_size) and state.dtype == network.dtype
    for block in network.blocks:
        assert bool((state[..., block.start:block.stop] == values[block.variable]).all())


def test_initial_parameters_beyond_the_dtypes_range_are_refused_by_name():
    # they were built as inf and reported after the first epoch as a too large learning rate
    with pytest.raises(ConfigError, match=r"gain 1e\+39 gives initial weights beyond the "
                                          r"range of torch.float32"):
        Network("hopfield", (4, 3, 2), gain=1e39, dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"bias_init 1e\+300 lies beyond the range"):
        Network("hopfield", (4, 3, 2), bias_init=1e300, dtype=torch.float32)
    Network("hopfield", (4, 3, 2), gain=1e39)  # float64 holds it
