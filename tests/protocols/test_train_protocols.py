"""The shipped training protocols for noisy, spiking and oscillator networks, scaled down to
the built-in digits task, learn (well above the 10 % of chance) through ``neuroeq run``."""

from pathlib import Path

import pytest
import xarray as xr

from neuroeq.cli import main
from neuroeq.engines.brian2_spiking import SpikingEngine
from neuroeq.protocols import load_protocol, run_protocol
from neuroeq.protocols.build import build_model, build_rule

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
DIGITS = ['data.name="digits"', "outputs.figures=false", "outputs.state_samples=0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _accuracy(out: Path) -> list[float]:
    return [float(a) for a in xr.open_dataset(out / "metrics.nc").test_accuracy.values]


def test_langevin_finite_nudge_protocol_learns_digits(tmp_path):
    protocol = load_protocol(PROTOCOLS / "fmnist_langevin_finite_nudge.toml", [
        *DIGITS, "network.sizes=[64, 16, 10]", "rule.chains=4", "rule.burn_in=20",
        "rule.samples=5", "training.epochs=2", "training.lr=0.5", "training.lr_decay=1.0",
        "training.limit_train=640", "training.limit_test=200"])
    rule = build_rule(protocol.config, build_model(protocol.config))
    # the [rule] keys reach the sampler
    assert (rule.name, rule.beta, rule.temperature, rule.groups) == ("finite_nudge", 1.0,
                                                                     0.02, 2)
    assert (rule.sampler.chains, rule.sampler.burn_in, rule.sampler.samples,
            rule.sampler.thin, rule.sampler.metropolis) == (4, 20, 5, 2, True)
    out = run_protocol(protocol, tmp_path / "fn", progress=False)
    accuracy = _accuracy(out)
    assert accuracy[-1] > 0.4, accuracy  # chance is 0.1; measured 0.56


def test_path_integral_options_reach_the_rule():
    protocol = load_protocol(PROTOCOLS / "fmnist_langevin_finite_nudge.toml", [
        'rule.name="path_integral"', "rule.points=3", "rule.beta=0.5", "rule.dt_ms=0.05",
        "rule.metropolis=false"])
    rule = build_rule(protocol.config, build_model(protocol.config))
    assert rule.name == "path_integral" and len(rule.nodes) == 3
    assert max(rule.nodes) < 0.5 and rule.sampler.dt == pytest.approx(5e-5)
    assert not rule.sampler.metropolis


def test_rule_errors_name_the_rule_section(tmp_path, capsys):
    # chains must be a multiple of groups: the rule's own check, reported under [rule]
    path = PROTOCOLS / "fmnist_langevin_finite_nudge.toml"
    assert main(["run", str(path), "--out", str(tmp_path / "x"), "--set", "rule.chains=9",
                 "--set", 'data.name="digits"', "--set", "network.sizes=[64, 8, 10]"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "[rule] (finite_nudge)" in error and "chains 9" in error
    # a Gibbs rule on a model without a Gibbs distribution fails before any training
    assert main(["run", str(path), "--out", str(tmp_path / "y"), "--set", 'model.name="fhn"',
                 "--set", 'data.name="digits"', "--set", "network.sizes=[64, 8, 10]"]) == 2
    assert "gradient model" in capsys.readouterr().err


def test_oscillator_protocol_learns_digits(tmp_path):
    protocol = load_protocol(PROTOCOLS / "mnist_oscillator_centered.toml", [
        *DIGITS, "network.sizes=[64, 32, 10]", "engine.free_steps=400",
        "engine.nudged_steps=100", "training.epochs=2", "training.lr_decay=1.0",
        "training.lr=0.01", "training.limit_train=480", "training.limit_test=200"])
    out = run_protocol(protocol, tmp_path / "osc", progress=False)
    accuracy = _accuracy(out)
    assert accuracy[-1] > 0.4, accuracy  # chance is 0.1; measured 0.585


@pytest.mark.brian2
def test_spiking_stochastic_ep_protocol_learns_digits(tmp_path):
    protocol = load_protocol(PROTOCOLS / "mnist_spiking_stoch_ep.toml", [
        *DIGITS, "outputs.state_samples=2", "network.sizes=[64, 16, 10]",
        'engine.target="numpy"', "engine.window=100",
        "engine.burn_in=20", "training.batch_size=32", "training.epochs=3",
        "training.lr=0.5", "training.limit_train=320", "training.limit_test=100"])
    out = run_protocol(protocol, tmp_path / "spiking", progress=False)
    accuracy = _accuracy(out)
    assert accuracy[-1] > 0.4, accuracy  # chance is 0.1; measured 0.56
    assert "no states.nc" in (out / "log.txt").read_text()
    assert not (out / "states.nc").exists()


@pytest.mark.brian2
def test_spiking_protocol_settings_reach_the_engine():
    protocol = load_protocol(PROTOCOLS / "mnist_spiking_stoch_ep.toml")
    rule = build_rule(protocol.config, build_model(protocol.config))
    assert rule.name == "stoch_ep" and rule.centered and rule.beta == 1.0
    assert isinstance(rule.engine, SpikingEngine)
    assert (rule.engine.window, rule.engine.burn_in, rule.engine.replicas,
            rule.engine.dt) == (200, 50, 2, pytest.approx(1e-4))
