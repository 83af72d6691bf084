"""Settings a network's dtype cannot hold (a step ``dt``, a nudge ``beta``, a weight decay,
a temperature, ...) are refused by name, with their value and the limit, before any
computation: not a raw overflow from inside torch, nor states full of inf and NaN."""

import pytest
import torch

from neuroeq import TorchEngine
from neuroeq.checks import within_dtype
from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.protocols import load_protocol
from neuroeq.rules import make_rule
from neuroeq.training import TrainConfig
from neuroeq.training.trainer import make_optimizer
from tests.conftest import make_problem
from tests.protocols.test_run import TINY_TRAIN

BEYOND_FLOAT32 = r"is beyond the range of the network's float32 \(3.4e\+38\)"


def _float32_problem(model: str = "hopfield"):
    return make_problem(model, sizes=(4, 3, 2), batch=2, dtype=torch.float32)


def test_within_dtype_passes_what_the_dtype_holds_and_names_what_it_does_not():
    assert within_dtype(3e38, "beta", torch.float32) == 3e38
    assert within_dtype(1e300, "beta", torch.float64) == 1e300
    assert within_dtype(torch.tensor(0.5), "beta", torch.float32) == 0.5
    assert within_dtype(-2 + 1j, "beta", torch.float32) == -2 + 1j
    for value in (1e39, -1e39, float("inf"), 1e39j):
        with pytest.raises(ConfigError, match=r"^beta .* " + BEYOND_FLOAT32):
            within_dtype(value, "beta", torch.float32)
    with pytest.raises(ConfigError, match=r"x 1e\+39 for 'W1' is beyond"):
        within_dtype(1e39, "x", torch.float32, " for 'W1'")
    for bad in (float("nan"), "1", True, None):
        with pytest.raises(ConfigError, match=r"beta must be a finite number"):
            within_dtype(bad, "beta", torch.float32)


@pytest.mark.parametrize("name, model", [("ep", "hopfield"), ("centered", "hopfield"),
                                         ("vf", "hopfield"), ("asym", "hopfield"),
                                         ("dyadic", "hopfield"), ("skew_ep", "fhn"),
                                         ("skew_centered", "fhn"), ("holomorphic", "linear")])
def test_every_rule_refuses_a_beta_beyond_the_networks_dtype(name, model):
    network, batch = _float32_problem(model)
    rule = make_rule(name, beta=1e300, engine=TorchEngine(max_steps=20))
    with pytest.raises(ConfigError, match=r"beta 1e\+300 " + BEYOND_FLOAT32):
        rule.estimate(network, batch)
    with pytest.raises(ConfigError, match=r"beta 1e\+300 " + BEYOND_FLOAT32):
        TorchEngine().relax(network, batch[0], y=batch[1], beta=1e300)


def test_a_beta_within_range_whose_nudge_step_is_not_is_refused():
    network, (x, y) = _float32_problem()
    engine = TorchEngine(dt=network.tau * 100)  # dt/tau = 100: beta 3e38 gives 3e40
    with pytest.raises(ConfigError, match=r"the nudge step dt\*\|beta\|/tau 3e\+40 \(beta = "
                                          r"3e\+38, dt = 0.1 s, tau = 0.001 s; lower beta\) "
                                          + BEYOND_FLOAT32):
        engine.relax(network, x, y=y, beta=3e38)


def test_a_step_beyond_the_networks_dtype_is_refused_on_every_path():
    network, (x, y) = _float32_problem()
    message = (r"the Euler step dt/tau 1e\+39 \(dt = 1e\+36 s, tau = 0.001 s; lower dt\) "
               + BEYOND_FLOAT32)
    for solver in ("euler", "anderson", "gauss_seidel"):
        engine = TorchEngine(dt=1e36, solver=solver, max_steps=20)
        with torch.no_grad(), pytest.raises(ConfigError, match=message):
            engine.relax(network, x)
        with pytest.raises(ConfigError, match=message):
            make_rule("centered", beta=0.1, engine=engine).estimate(network, (x, y))
    with pytest.raises(ConfigError, match=message):  # under autograd: the generic loop
        make_rule("bptt", engine=TorchEngine(dt=1e36, max_steps=20)).estimate(network, (x, y))
    with pytest.raises(ConfigError, match=r"dt 1e\+39 s " + BEYOND_FLOAT32):
        TorchEngine(dt=1e39).relax(network, x)
    TorchEngine(dt=1e36, max_steps=20, tol=0.0).relax(network.double(), x.double())  # float64


def test_solver_factors_beyond_the_networks_dtype_are_refused():
    network, (x, _) = _float32_problem()
    with torch.no_grad(), pytest.raises(ConfigError, match=r"anderson_mixing 1e\+300 "
                                                           + BEYOND_FLOAT32):
        TorchEngine(solver="anderson", anderson_mixing=1e300).relax(network, x)
    with torch.no_grad(), pytest.raises(ConfigError, match=r"over_relaxation\*dt \S+e\+296 s "
                                                           + BEYOND_FLOAT32):
        TorchEngine(solver="gauss_seidel", over_relaxation=1e300).relax(network, x)


def test_oracle_and_sampler_settings_beyond_the_networks_dtype_are_refused():
    network, batch = _float32_problem()
    with pytest.raises(ConfigError, match=r"h 1e\+300 " + BEYOND_FLOAT32):
        make_rule("fd", h=1e300).estimate(network, batch)
    sampler = {"chains": 4, "groups": 2, "burn_in": 1, "samples": 1, "thin": 1}
    with pytest.raises(ConfigError, match=r"temperature 1e\+300 " + BEYOND_FLOAT32):
        make_rule("finite_nudge", beta=1.0, temperature=1e300, **sampler).estimate(network,
                                                                                  batch)
    with pytest.raises(ConfigError, match=r"dt 1e\+300 s " + BEYOND_FLOAT32):
        make_rule("path_integral", beta=1.0, dt=1e300, **sampler).estimate(network, batch)
    with pytest.raises(ConfigError, match=r"the noise variance 2\*T\*dt/tau 2e\+39 \(T = "
                                          r"1e\+37, dt = 0.1 s"):
        make_rule("finite_nudge", beta=1.0, temperature=1e37, dt=network.tau * 100,
                  **sampler).estimate(network, batch)


def test_the_spiking_engine_refuses_a_beta_beyond_the_networks_dtype():
    from neuroeq.engines.brian2_spiking import SpikingEngine

    network, _ = make_problem("spiking_rate", sizes=(4, 3, 2), dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"beta 1e\+300 " + BEYOND_FLOAT32):
        SpikingEngine().check_range(network, 1e300)
    with pytest.raises(ConfigError, match=r"the nudging current \|beta\|/tau 3e\+41"):
        SpikingEngine().check_range(network, 3e38)


@pytest.mark.parametrize("setting", ["weight_decay", "momentum"])
def test_the_optimizer_refuses_a_setting_beyond_the_networks_dtype(setting):
    network = Network("hopfield", (4, 3, 2), seed=0, dtype=torch.float32)
    with pytest.raises(ConfigError, match=rf"training.{setting} 1e\+300 " + BEYOND_FLOAT32):
        make_optimizer(network, TrainConfig(**{setting: 1e300}))
    make_optimizer(network.double(), TrainConfig(**{setting: 1e300}))  # float64 holds it


def test_training_refuses_a_rules_beta_before_the_first_epoch():
    from neuroeq.data import load_dataset
    from neuroeq.training import train

    data = load_dataset("digits", limit=8)
    network = Network("hopfield", (64, 4, 10), seed=0, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    rule = make_rule("centered", beta=1e300, engine=TorchEngine(max_steps=5))
    with pytest.raises(ConfigError, match=r"beta 1e\+300 " + BEYOND_FLOAT32):
        train(network, rule, data, None, TrainConfig(epochs=1, batch_size=8), progress=False)
    assert all(torch.equal(before[name], p) for name, p in network.named_parameters())


@pytest.mark.parametrize("override, message", [
    ("engine.dt_ms=1e39", r"the Euler step dt/tau 1e\+39 \(dt = 1e\+36 s"),
    ("rule.beta=1e300", r"beta 1e\+300"),
    ("training.weight_decay=1e300", r"training.weight_decay 1e\+300"),
])
def test_a_protocol_with_a_setting_beyond_its_dtype_ends_with_one_error_line(
        tmp_path, capsys, override, message):
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(load_protocol(TINY_TRAIN, [override, "training.epochs=1",
                                                   "outputs.figures=false",
                                                   "outputs.state_samples=0"]).to_toml())
    assert main(["run", str(protocol), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("neuroeq: error: ")
    assert __import__("re").search(message + r".* " + BEYOND_FLOAT32, error), error
