"""Brian2 engine: the model file's FHN equations in Brian2 agree with the torch engine; EP
rules on Brian2 states match the oracle; failures are detected; weights change in place."""

import re

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines.brian2_engine import Brian2Engine
from neuroeq.errors import ConfigError, ModelError, RelaxationError
from neuroeq.neuron_model import load_model
from neuroeq.rules import (
    BPTT,
    AsymEP,
    CenteredSkewGradientEP,
    DyadicEP,
    ImplicitDifferentiation,
    SkewGradientEP,
)
from tests.conftest import cosine, make_problem

pytestmark = pytest.mark.brian2

SIZES = (6, 5, 3)


@pytest.fixture(scope="module")
def brian2_engine():
    return Brian2Engine(target="numpy", tol=1e-12, max_steps=20_000, check_every=400)


@pytest.fixture(scope="module")
def torch_engine():
    return TorchEngine(tol=1e-12, max_steps=100_000)


def _oracle(network, batch, engine):
    names = [n for n, _ in network.named_parameters()]
    with torch.no_grad():
        free = engine.relax(network, batch[0])
    true = ImplicitDifferentiation(engine).estimate(network, batch, free=free, write_grad=False)
    return names, free, true.flat(names)


@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric"])
def test_stationary_states_agree_with_torch(coupling, brian2_engine, torch_engine):
    network, (x, _) = make_problem("fhn", SIZES, coupling, batch=3)
    with torch.no_grad():
        expected = torch_engine.relax(network, x)
    found = brian2_engine.relax(network, x)
    assert bool(found.converged.all())
    assert float(found.residual.max()) < 1e-12
    assert float((found.state - expected.state).abs().max()) <= 1e-6  # measured ~1e-12


@pytest.mark.parametrize("rule_class, beta", [(SkewGradientEP, 1e-4),
                                              (CenteredSkewGradientEP, 1e-3)])
def test_skew_gradient_ep_on_brian2_states_matches_oracle(rule_class, beta, brian2_engine,
                                                          torch_engine):
    network, batch = make_problem("fhn", SIZES, batch=3)
    names, _, true = _oracle(network, batch, torch_engine)
    found = rule_class(beta, brian2_engine).estimate(network, batch, write_grad=False)
    assert cosine(found.flat(names), true) >= 0.9999


@pytest.mark.parametrize("coupling", ["asymmetric", "feedforward"])
def test_asym_ep_correction_inside_brian2_matches_torch_and_oracle(coupling, brian2_engine,
                                                                   torch_engine):
    network, batch = make_problem("fhn", SIZES, coupling, batch=3)
    names, free, true = _oracle(network, batch, torch_engine)
    rule = AsymEP(1e-3, brian2_engine)
    found = rule.estimate(network, batch, write_grad=False)
    assert cosine(found.flat(names), true) >= 0.9999
    # the nudged state with the Brian2-side correction -2A(s - s*) is torch's nudged state
    force = rule.correction(network, free.state, batch[0])
    with torch.no_grad():
        expected = torch_engine.relax(network, batch[0], y=batch[1], beta=1e-3, init=free.state,
                                      force=force)
    assert float((found.nudged["+beta"].state - expected.state).abs().max()) <= 1e-6


def test_asym_ep_correction_is_needed(brian2_engine, torch_engine):
    """Without the in-model correction (vector-field nudging) the gradient is off."""
    network, batch = make_problem("fhn", SIZES, "asymmetric", batch=3)
    names, free, true = _oracle(network, batch, torch_engine)
    corrected = AsymEP(1e-3, brian2_engine).estimate(network, batch, free=free,
                                                     write_grad=False).flat(names)
    plus = brian2_engine.relax(network, batch[0], y=batch[1], beta=1e-3, init=free.state)
    minus = brian2_engine.relax(network, batch[0], y=batch[1], beta=-1e-3, init=free.state)
    from neuroeq.rules.phases import combine, readout_gradients, velocity_vjp

    response = (plus.state - minus.state) / 2e-3 * network.tau
    grads = combine(velocity_vjp(network, free.state, batch[0], response),
                    readout_gradients(network, free.state, batch[1]))
    uncorrected = torch.cat([grads[n].reshape(-1) for n in names])
    error = float((uncorrected - true).norm() / true.norm())
    assert error > 100 * float((corrected - true).norm() / true.norm())
    assert error > 1e-3


def test_nudged_trajectory_is_torch_step_for_step(torch_engine):
    """The readout's nudge is refreshed inside the simulation at every step, so a nudged
    phase follows the torch engine's trajectory, not only its end point; refreshing it
    every 50 steps only (``nudge_every``) gives a different trajectory."""
    network, (x, y) = make_problem("fhn", SIZES, batch=3)
    with torch.no_grad():
        free = torch_engine.relax(network, x)
        expected = TorchEngine(tol=0.0, max_steps=120).relax(network, x, y=y, beta=0.5,
                                                             init=free.state)
    found = Brian2Engine(target="numpy", tol=0.0, max_steps=120, check_every=40).relax(
        network, x, y=y, beta=0.5, init=free.state)
    assert float((found.state - expected.state).abs().max()) <= 1e-10  # measured ~1e-15
    lagging = Brian2Engine(target="numpy", tol=0.0, max_steps=120, check_every=40,
                           nudge_every=50).relax(network, x, y=y, beta=0.5, init=free.state)
    assert float((lagging.state - expected.state).abs().max()) > 1e-7  # measured 1e-5
    # a lagging force leaves the phase further from rest (measured 7e-5 against 2e-8)
    assert float(lagging.residual.min()) > 100 * float(found.residual.max())
    with pytest.raises(ConfigError, match="nudge_every"):
        Brian2Engine(target="numpy", nudge_every=0)


def test_limit_cycle_is_reported_with_layer_and_samples():
    model = load_model("fhn", eps=0.08, b=0.8)  # textbook regime: coupled units oscillate
    network, (x, _) = make_problem(model, (4, 3, 2), batch=2, gain=2.0)
    engine = Brian2Engine(target="numpy", tol=1e-8, max_steps=4000, check_every=500)
    with pytest.raises(RelaxationError, match="oscillating") as caught:
        engine.relax(network, x)
    error = caught.value
    assert error.kind == "oscillating"
    assert error.layer.startswith(("hidden1", "output"))
    with pytest.raises(RelaxationError) as in_torch:
        TorchEngine(tol=1e-8, max_steps=4000, check_every=500).relax(network, x)
    assert error.samples == in_torch.value.samples == [0, 1]
    assert "did not settle" in str(error) and "samples" in str(error)


def test_divergence_is_reported():
    network, (x, _) = make_problem("fhn", SIZES, batch=2)
    engine = Brian2Engine(target="numpy", dt=0.02, max_steps=200, check_every=50)
    with pytest.raises(RelaxationError) as caught:
        engine.relax(network, x)
    assert caught.value.kind in ("diverged", "nan")
    assert caught.value.samples == [0, 1]


def test_weights_change_between_phases_without_rebuilding(brian2_engine, torch_engine):
    network, (x, _) = make_problem("fhn", SIZES, batch=3)
    engine = Brian2Engine(target="numpy", tol=1e-12, max_steps=20_000, check_every=400)
    before = engine.relax(network, x)
    simulation = engine.simulation(network, 3)
    synapses = simulation.projections[0].synapses
    with torch.no_grad():
        network.weights["W2"].mul_(-1.5)
        network.weights["W1"].add_(0.1)
        network.biases["b2"].add_(0.2)
        expected = torch_engine.relax(network, x)
    after = engine.relax(network, x)
    assert engine.builds == 1
    assert engine.simulation(network, 3).projections[0].synapses is synapses
    assert float((after.state - before.state).abs().max()) > 1e-2
    assert float((after.state - expected.state).abs().max()) <= 1e-6


def test_an_engine_keeps_only_the_simulations_used_last(monkeypatch):
    """A loop over networks (gradcheck over models and seeds) does not keep every network
    and its Brian2 objects alive; the network in use is not rebuilt."""
    import gc
    import weakref

    from brian2.utils.logger import catch_logs

    from neuroeq.engines import brian2_common

    monkeypatch.setattr(brian2_common, "KEPT_SIMULATIONS", 2)
    engine = Brian2Engine(target="numpy", tol=1e-6, max_steps=5_000, check_every=400)
    with catch_logs():  # Brian2 notes that the dropped objects never ran
        first, _ = make_problem("fhn", SIZES, batch=2)
        engine.simulation(first, 2)
        gone = weakref.ref(first)
        for seed in (1, 2):
            network, _ = make_problem("fhn", SIZES, batch=2, seed=seed)
            engine.simulation(network, 2)
        assert len(engine._simulations) == 2 and engine.builds == 3
        engine.simulation(network, 2)
        assert engine.builds == 3
        del first
        gc.collect()
        assert gone() is None
        engine._simulations.clear()
        gc.collect()


@pytest.mark.slow
def test_cython_target_does_not_recompile_when_weights_change(torch_engine):
    """Compiled once (cached in the project's cache directory); new weights reuse it."""
    from brian2.codegen.runtime.cython_rt.extension_manager import cython_extension_manager

    network, (x, _) = make_problem("fhn", SIZES, batch=3)
    engine = Brian2Engine(target="cython", tol=1e-12, max_steps=20_000, check_every=400)
    engine.relax(network, x)
    extensions = len(cython_extension_manager._code_cache)
    with torch.no_grad():
        network.weights["W2"].mul_(0.5)
        expected = torch_engine.relax(network, x)
    found = engine.relax(network, x)
    assert len(cython_extension_manager._code_cache) == extensions
    assert float((found.state - expected.state).abs().max()) <= 1e-6


@pytest.mark.slow
def test_a_new_simulation_reuses_the_compiled_code():
    """A second engine's objects (the first still alive) generate the same code: the clock
    has a fixed name, so Brian2 does not number it and nothing is compiled again."""
    from brian2.codegen.runtime.cython_rt.extension_manager import cython_extension_manager

    network, (x, _) = make_problem("fhn", SIZES, batch=3)
    first = Brian2Engine(target="cython", tol=0.0, max_steps=20, check_every=20)
    expected = first.relax(network, x)
    extensions = len(cython_extension_manager._code_cache)
    found = Brian2Engine(target="cython", tol=0.0, max_steps=20, check_every=20).relax(network, x)
    assert len(cython_extension_manager._code_cache) == extensions
    assert torch.equal(found.state, expected.state)


@pytest.mark.parametrize("lateral", [False, True])
def test_interleaved_synapses_keep_each_neurons_summation_order(lateral):
    """Grouping copies changes the synapse order, not which synapses a neuron sums nor the
    order in which it sums them (so the states are bit for bit those of the plain order)."""
    import numpy as np

    from neuroeq.engines.brian2_common import block_diagonal

    plain = block_diagonal(5, 4, 4, exclude_diagonal=lateral)
    grouped = block_diagonal(5, 4, 4, exclude_diagonal=lateral, interleave=2)
    assert np.array_equal(plain[2], grouped[2])
    for target, partner in ((1, 0), (0, 1)):  # a post neuron sums over pre, and vice versa
        for neuron in range(20):
            before, after = plain[target] == neuron, grouped[target] == neuron
            assert np.array_equal(plain[partner][before], grouped[partner][after])
            assert np.array_equal(plain[3][before], grouped[3][after])  # the same weights


def test_refuses_what_it_cannot_simulate(brian2_engine):
    network, batch = make_problem("fhn", SIZES, "asymmetric", batch=2)
    with pytest.raises(ConfigError, match="Dyadic"):
        DyadicEP(1e-3, brian2_engine).estimate(network, batch, write_grad=False)
    with pytest.raises(ConfigError, match="BPTT .* brian2 engine runs without autograd"):
        BPTT(brian2_engine)
    with pytest.raises(ConfigError, match="AsymEP"):
        brian2_engine.relax(network, batch[0], force=lambda s: 0 * s)
    with pytest.raises(ConfigError, match="target"):
        Brian2Engine(target="gpu")


def test_gradcheck_command_refuses_rules_brian2_cannot_run(capsys):
    from neuroeq.cli import main

    for rules in (["--rules", "asym,dyadic"], ["--rul", "dyadic"], ["--rules=dyadic"]):
        # (an abbreviated option is the same option: it was read as no --rules at all)
        status = main(["gradcheck", "--engine", "brian2", "--model", "fhn", *rules])
        assert status == 2
        assert "cannot run dyadic" in capsys.readouterr().err


def test_a_cache_directory_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    from neuroeq.engines.brian2_common import CACHE_ENV, cache_directory

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with pytest.raises(ConfigError, match=rf"code cache .*a_file/brian2.* cannot be created "
                                          rf".*set {CACHE_ENV} to a writable directory"):
        cache_directory()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "fresh"))
    assert cache_directory() == tmp_path / "fresh" / "brian2"
    assert (tmp_path / "fresh" / "brian2").is_dir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~ is the home folder, not "./~"
    monkeypatch.setenv(CACHE_ENV, "~/cache")
    assert cache_directory() == tmp_path / "home" / "cache" / "brian2"


@pytest.mark.parametrize("divergence", [float("nan"), 0.0, -1.0, "big"])
def test_a_divergence_bound_that_is_not_positive_is_refused(divergence):
    with pytest.raises(ConfigError, match="divergence must be a positive number"):
        Brian2Engine(target="numpy", divergence=divergence)


def test_a_float32_network_below_its_residual_floor_is_told_why():
    """Brian2 simulates in float64; read back into a float32 network the residual stays
    near 1e-7..1e-6, so a tighter tolerance fails with the reason and the remedy (the
    residual is the Euler step itself, not the difference of rounded states: 3.6e-7
    against 6.0e-7 here)."""
    network = Network("fhn", (12, 6, 3), dtype=torch.float32)
    x = torch.rand(4, 12, generator=torch.Generator().manual_seed(0))
    settled = Brian2Engine(target="numpy", tol=1e-6, max_steps=1000, check_every=100).relax(
        network, x)
    assert bool(settled.converged.all()) and float(settled.residual.max()) < 5e-7
    with pytest.raises(RelaxationError, match="float32 network: .* use a float64 network or "
                                              "tol >= 1e-06"):
        Brian2Engine(target="numpy", tol=1e-8, max_steps=1000, check_every=100).relax(
            network, x)


def test_a_model_brian2_refuses_is_a_model_error_naming_brian2s_reason(tmp_path):
    """A function the torch engine knows and Brian2 does not (sympy's Abs): Brian2's own
    message, one line, not its page-long traceback."""
    from neuroeq.neuron_model import find_model_file

    text = find_model_file("fhn").read_text()
    path = tmp_path / "fhn_abs.toml"
    path.write_text(text.replace("(I_syn + bias)", "(Abs(I_syn) + bias)", 1))
    assert "Abs(I_syn)" in path.read_text()
    network = Network(load_model(path), SIZES, seed=0)
    with pytest.raises(ModelError, match=r"Brian2 refused it \(KeyError: 'The identifier "
                                         r"\"Abs\" could not be resolved"):
        Brian2Engine(target="numpy", max_steps=100).relax(network, torch.rand(2, SIZES[0]))


@pytest.mark.parametrize("error", [MemoryError("no memory"),
                                   RuntimeError("CUDA out of memory (fake)")])
def test_running_out_of_memory_is_not_called_brian2_refusing_the_model(monkeypatch, error):
    from neuroeq.engines import brian2_engine

    def build(*args, **kwargs):
        raise error

    monkeypatch.setattr(brian2_engine._Simulation, "build_objects", build)
    network, (x, _) = make_problem("fhn", SIZES, batch=2)
    with pytest.raises(type(error), match="memory"):
        Brian2Engine(target="numpy").relax(network, x)


#: imports Brian2 through neuroeq with the arguments it is given, then writes to Brian2's
#: debug log; prints what Brian2 wrote, as ASCII JSON
ARGV_SCRIPT = """
import json, logging, sys
from neuroeq.brian2_import import import_brian2
argv = list(sys.argv)
import_brian2()
from brian2.utils.logger import BrianLogger
logging.getLogger("brian2").warning("result folder %s", argv[1])
BrianLogger.file_handler.flush()
undecoded = [any(0xDC80 <= ord(c) <= 0xDCFF for c in arg) for arg in argv[1:]]
files = [open(path, encoding="utf-8").read()
         for path in (BrianLogger.tmp_script, BrianLogger.tmp_log)]
print(json.dumps([undecoded, sys.argv == argv, *files]))
"""


def test_arguments_the_locale_cannot_decode_do_not_stop_brian2s_import(tmp_path):
    """Under ``LC_ALL=C`` without UTF-8 mode (``PYTHONUTF8=0``: from Python 3.7 the C locale
    turns it on) a UTF-8 ``é`` in the arguments is decoded to lone surrogates, as is a
    Latin-1 byte under any UTF-8 locale; Brian2's import wrote them into its copy of the
    script as strict UTF-8 and raised UnicodeEncodeError."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "script.py"  # Brian2 copies a script file, not ``python -c``
    script.write_text(ARGV_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LC_") and k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    done = subprocess.run([sys.executable, str(script), b"r\xc3\xa9sultats", b"\xe9"],
                          capture_output=True, env=env, timeout=120)
    stderr = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 0, stderr
    undecoded, argv_kept, copy, log = json.loads(done.stdout)
    assert undecoded == [True, True]  # the case that failed: not decoded by the locale
    assert argv_kept  # sys.argv is the process's own again after the import
    assert f"# Run as: {script} r\xe9sultats \\xe9\n" in copy
    assert "result folder r\\udcc3\\udca9sultats" in log
    assert "Logging error" not in stderr


@pytest.mark.parametrize("engine, model, name, meaning", [
    ("brian2", "hopfield_smooth", "I_in", "the clamped input layer's current in the Brian2"),
    ("brian2", "hopfield_smooth", "e", "Brian2's constant 'e' in the Brian2"),
    ("spiking", "spiking_rate", "acc_r", "the accumulated spike count in the spiking"),
])
def test_a_refused_parameter_leaves_no_brian2_object_behind(engine, model, name, meaning):
    """The engine refuses a parameter named as one of its variables (or Brian2's own name:
    Brian2 would read that instead) before it builds any Brian2 object: objects built
    first were dropped unused, and Brian2 warned of each that it "was never included in a
    network"."""
    import dataclasses
    import gc

    from neuroeq.engines.brian2_spiking import SpikingEngine

    loaded = load_model(model)  # past the model file's own check of the names
    loaded = dataclasses.replace(loaded, parameters={**loaded.parameters, name: 0.3},
                                 parameter_units={**loaded.parameter_units, name: "1"})
    network = Network(loaded, (3, 3, 2), seed=0)
    x = torch.rand(2, 3, dtype=torch.float64)
    run = Brian2Engine(target="numpy", max_steps=10, check_every=10) if engine == "brian2" \
        else SpikingEngine(target="numpy", burn_in=0, window=10)
    from brian2.utils.logger import catch_logs

    gc.collect()  # objects that earlier tests left unused warn now, not below
    with catch_logs() as logs:
        with pytest.raises(ModelError, match=rf"model '{model}': parameter '{name}' is also "
                                             rf"{re.escape(meaning)}"):
            run.relax(network, x)
        gc.collect()
    assert logs == []
