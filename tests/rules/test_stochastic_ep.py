"""Stochastic EP on the Brian2 spiking engine converges to mean-field EP; seeds reproduce."""

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines.brian2_spiking import SpikingEngine
from neuroeq.errors import ConfigError, ModelError
from neuroeq.rules import CenteredEP, ImplicitDifferentiation
from neuroeq.rules.stochastic_ep import StochasticEP, mean_field_limit
from tests.conftest import cosine

pytestmark = pytest.mark.brian2

BETA = 0.1


def _problem():
    # rates inside (0, 1), where the hard sigmoid is linear and the mean field is exact
    network = Network("spiking_rate", (6, 8, 3), seed=0, gain=0.5, bias_init=0.5)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=generator)
    return network, x, y


def _flat(grads, names):
    return torch.cat([grads[n].reshape(-1) for n in names])


def _mean_field(network, x, y, centered=True, beta=BETA):
    names = [n for n, _ in network.named_parameters() if not n.startswith("readout.")]
    engine = TorchEngine(dt=5e-5, tol=1e-12, max_steps=400_000)
    with torch.no_grad():
        free = engine.relax(network, x)
    limit = mean_field_limit(network, x, y, beta, engine, free, centered)
    true = ImplicitDifferentiation(engine).estimate(network, (x, y), free=free,
                                                    write_grad=False).flat(names)
    return _flat(limit, names), true, names


def test_the_mean_field_limit_of_centered_stochastic_ep_is_the_true_gradient():
    """Rates inside ρ's linear range (at β = 0.1 here): the fixed point is linear in the
    constant nudge, so the centered contrast is exact (one-sided: O(β)); the
    state-dependent nudge of CenteredEP is not (O(β²))."""
    network, x, y = _problem()
    centered, true, names = _mean_field(network, x, y, beta=0.1)
    assert float((centered - true).norm() / true.norm()) < 1e-8
    one_sided = _mean_field(network, x, y, centered=False, beta=0.1)[0]
    assert 0.01 < float((one_sided - true).norm() / true.norm()) < 0.03  # 0.0197: O(β)
    engine = TorchEngine(dt=5e-5, tol=1e-12, max_steps=400_000)
    state_dependent = CenteredEP(0.1, engine).estimate(network, (x, y),
                                                       write_grad=False).flat(names)
    assert float((state_dependent - true).norm() / true.norm()) > 1e-3


def test_stochastic_ep_converges_to_its_mean_field_limit():
    network, x, y = _problem()
    reference, _, names = _mean_field(network, x, y)
    engine = SpikingEngine(target="numpy", window=2000, snapshots=(100,), replicas=4, seed=3)
    rule = StochasticEP(BETA, engine)
    estimate = rule.estimate(network, (x, y))
    longest = estimate.flat(names)
    assert cosine(longest, reference) >= 0.99
    # the scale too: a rule off by a factor has cosine 1
    assert float((longest - reference).norm() / reference.norm()) < 0.15
    mean_field = TorchEngine(dt=5e-5, tol=1e-10, max_steps=400_000)
    shortest = _flat(rule.combine_phases(network, x, estimate.free, estimate.nudged, 0, 1), names)
    assert float((shortest - reference).norm()) > float((longest - reference).norm())
    # the free phase's mean membrane is the mean-field stationary state
    with torch.no_grad():
        free = mean_field.relax(network, x)
    assert float((estimate.free.state - free.state).abs().max()) < 0.05
    # gradients land in param.grad like every other rule
    assert torch.equal(network.weights["W1"].grad, estimate.grads["weights.W1"])


def test_seeds_make_phases_reproducible():
    network, x, y = _problem()

    def run(seed):
        engine = SpikingEngine(target="numpy", window=200, burn_in=50, replicas=2, seed=seed)
        return StochasticEP(BETA, engine).estimate(network, (x, y), write_grad=False)

    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first.flat(), again.flat())
    assert torch.equal(first.free.rates[2], again.free.rates[2])
    assert not torch.equal(first.flat(), other.flat())
    # the nudged phases share the free phase's random numbers (common random numbers)
    assert first.nudged["+beta"].seed == first.free.seed


def test_nudged_phase_needs_a_reference_state():
    from neuroeq.rules import make_rule

    assert isinstance(make_rule("stoch_ep", beta=BETA), StochasticEP)
    network, x, y = _problem()
    engine = SpikingEngine(target="numpy", window=10, burn_in=0)
    with pytest.raises(ConfigError, match="nudge_at"):
        engine.relax(network, x, y=y, beta=BETA)
    with pytest.raises(ConfigError, match="snapshots"):
        SpikingEngine(target="numpy", window=10, snapshots=(20,)).relax(network, x)


def test_statistics_start_exactly_at_the_end_of_the_burn_in():
    # one run() per phase: the accumulators count from step burn_in on. A phase with a
    # 10-step burn-in and a 20-step window sees the same spikes as steps 10..29 of a phase
    # without burn-in read at windows 10 and 30 (same seed, same random numbers).
    network, x, y = _problem()

    def phase(burn_in, window, snapshots=()):
        engine = SpikingEngine(target="numpy", burn_in=burn_in, window=window,
                               snapshots=snapshots, replicas=2)
        return engine.relax(network, x, seed=11)

    whole, late = phase(0, 30, (10,)), phase(10, 20)
    for l in (1, 2):
        sums = whole.rates[l] * torch.tensor([10.0, 30.0]).view(2, 1, 1, 1)
        torch.testing.assert_close(late.rates[l][-1] * 20, sums[1] - sums[0],
                                   rtol=0, atol=1e-9)
    sums = whole.coincidences["W2"] * torch.tensor([10.0, 30.0]).view(2, 1, 1, 1, 1)
    torch.testing.assert_close(late.coincidences["W2"][-1] * 20, sums[1] - sums[0],
                               rtol=0, atol=1e-9)
    assert float(late.rates[1][-1].sum()) > 0  # spikes were counted at all


def test_rate_error_nudge_reaches_outputs_outside_the_linear_range():
    from dataclasses import replace

    network, x, y = _problem()
    state = network.initial_state(4)
    block = network.output_block
    state[:, block.start:block.stop] = torch.tensor([-0.5, 0.3, 1.5])  # below, inside, above
    y = torch.tensor([0, 1, 2, 0])
    rate_error = SpikingEngine.nudge_gradient(network, state, y)
    # ∂C/∂r of ½‖r - onehot(y)‖² with r = clip(u, 0, 1) = (0, 0.3, 1)
    torch.testing.assert_close(rate_error[0], torch.tensor([-1.0, 0.3, 1.0], dtype=state.dtype))
    network.model = replace(network.model, spiking={**network.model.spiking,
                                                    "nudge": "chain_rule"})
    chain = SpikingEngine.nudge_gradient(network, state, y)
    torch.testing.assert_close(chain[0], torch.tensor([0.0, 0.3, 0.0], dtype=state.dtype))
    network.model = replace(network.model, spiking={**network.model.spiking, "nudge": "rates"})
    with pytest.raises(ModelError, match="nudge 'rates' must be one of chain_rule, rate_error"):
        SpikingEngine(target="numpy").settings(network)


def test_a_reused_simulation_sees_new_weights_inputs_and_nudges():
    # after its first run() the simulation keeps its code objects; what changes between
    # phases (weights, biases, input currents, nudges) lives in state variables, so a warm
    # engine gives the same statistics as a fresh one
    network, x, y = _problem()
    warm = SpikingEngine(target="numpy", burn_in=10, window=30, replicas=2)
    warm.relax(network, x, seed=1)
    with torch.no_grad():
        for param in network.parameters():
            param.mul_(1.3).add_(0.05)
    x = x.flip(0)
    fresh = SpikingEngine(target="numpy", burn_in=10, window=30, replicas=2)
    phases = []
    for engine in (warm, fresh):
        free = engine.relax(network, x, seed=2)
        nudged = engine.relax(network, x, y=y, beta=0.5, init=free.start, seed=free.seed,
                              nudge_at=free.state)
        phases.append((free, nudged))
    assert warm.builds == fresh.builds == 1
    for a, b in zip(phases[0], phases[1], strict=True):
        assert torch.equal(a.state, b.state)
        assert torch.equal(a.coincidences["W2"], b.coincidences["W2"])
    assert not torch.equal(phases[0][0].state, phases[0][1].state)  # the nudge acted


def test_later_phases_generate_no_code(monkeypatch):
    # Brian2 generates every code object again at each run(); the engines keep them
    import brian2.groups.group as brian2_group

    network, x, _ = _problem()
    engine = SpikingEngine(target="numpy", burn_in=5, window=10)
    engine.relax(network, x)
    generated = []
    original = brian2_group.create_runner_codeobj

    def counting(*args, **kwargs):
        generated.append(kwargs.get("name"))
        return original(*args, **kwargs)

    monkeypatch.setattr(brian2_group, "create_runner_codeobj", counting)
    engine.relax(network, x)
    engine.relax(network, x)
    assert generated == []


def test_phases_have_streams_of_their_own_and_leave_numpys_global_state_alone():
    """Phase k of engine seed s was seeded s + k: seed 1's first phase was seed 0's second
    (two training runs shared shifted noise). brian2.seed also reseeded numpy's global
    generator for the caller."""
    import numpy as np

    network, x, _ = _problem()

    def engine(seed):
        return SpikingEngine(target="numpy", window=30, burn_in=5, seed=seed)

    zero = engine(0)
    zero.relax(network, x)
    second_of_zero = zero.relax(network, x).state
    first_of_one = engine(1).relax(network, x).state
    assert not torch.equal(second_of_zero, first_of_one)
    torch.testing.assert_close(engine(1).relax(network, x).state, first_of_one, rtol=0, atol=0)
    draws = []
    for k in range(2):
        np.random.seed(1000 + k)
        engine(7).relax(network, x)
        draws.append(np.random.rand(3))
    assert not np.array_equal(*draws)
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    engine(7).relax(network, x)
    assert np.array_equal(np.random.rand(3), expected)


_PAYLOAD = "".join(f"\\{ord(c):03o}" for c in "__import__('os').system('touch PWNED')")


@pytest.mark.parametrize("entry, message", [
    ("burn_in = -50", r"burn_in must be a whole number of at least 0, got -50"),
    ("burn_in = 10.7", r"burn_in must be a whole number"),
    ('window = {value = 100, unit = "ms"}', "window is a number of steps, not a quantity"),
    ('dt = {value = 0.05, unit = "mV"}', r"\[spiking\] dt has unit 'mV', which is not a time"),
    ('dt = {value = 0.05, unit = "Quantity"}', "unknown unit 'Quantity'"),
    ('nudge = "rates"', "nudge 'rates' must be one of chain_rule, rate_error"),
    ("draw = 1", "draw must be a string of Brian2 code"),
    ('on_pre = "u_post w_syn"', "must be a statement 'target = expression'"),
    # strings inside Brian2 code reach sympy, which evaluates them: refused before Brian2
    (f"draw = '''rand() < rho*tanh(\"{_PAYLOAD}\")'''", "contains constant syntax"),
    (f"on_pre = '''u_post = u_post + w_syn*tanh(\"{_PAYLOAD}\")'''", "contains constant syntax"),
    ("window = 2000\ntypo = 1", r"unknown key\(s\) \['typo'\]"),
    # code that is not one expression would open a Brian2 statement of its own
    (f"draw = '''rand() < rho)\nu = u + 0*tanh(\"{_PAYLOAD}\") + (0'''",
     "draw must be one line"),
    ("draw = 'rand() < rho) + (0'", r"cannot parse expression"),
    ('on_pre = "u_post += w_syn; u_post += 1"', "may not hold ';'"),
])
def test_a_model_files_spiking_table_is_checked_when_it_loads(tmp_path, monkeypatch, entry,
                                                               message):
    import re

    from neuroeq.neuron_model import find_model_file, load_model

    head, table = find_model_file("spiking_rate").read_text().split("\n[spiking]\n")
    key = entry.split(" = ")[0]
    table = re.sub(rf"^{key} = .*$", lambda _: entry, table, count=1, flags=re.M)
    assert entry in table
    text = f"{head}\n[spiking]\n{table}"
    path = tmp_path / "spiking.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_model(path)
    assert not (tmp_path / "PWNED").exists()


def test_a_spiking_table_of_a_model_made_in_code_is_checked_by_the_engine():
    from dataclasses import replace

    network = Network("spiking_rate", (6, 8, 3), seed=0)
    network.model = replace(network.model, spiking={**network.model.spiking, "window": 10.5})
    with pytest.raises(ModelError, match="window must be a whole number"):
        SpikingEngine(target="numpy").settings(network)


def test_a_rule_and_an_engine_of_the_other_kind_are_refused_together():
    with pytest.raises(ConfigError, match="rule 'centered' needs an engine that relaxes to rest"):
        CenteredEP(0.1, SpikingEngine(target="numpy"))
    with pytest.raises(ConfigError, match="rule 'stoch_ep' estimates from spike statistics"):
        StochasticEP(0.1, TorchEngine())
    with pytest.raises(ConfigError, match=r"snapshots \(steps\) must be a whole number"):
        SpikingEngine(target="numpy", snapshots=(150.7,))
