"""Training on the built-in task beats chance; checkpoint/resume is exact."""

import pytest
import torch
import xarray as xr

from neuroeq import Network, TorchEngine
from neuroeq.data import load_dataset
from neuroeq.errors import ConfigError, RelaxationError
from neuroeq.rules import CenteredEP, ClassicEP
from neuroeq.training import TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=600), load_dataset("digits", "test", limit=300)


def _setup(seed=0):
    network = Network("hopfield", (64, 32, 10), seed=seed, dtype=torch.float32)
    rule = ClassicEP(0.5, TorchEngine(max_steps=20, tol=0.0), random_sign=True, seed=seed)
    return network, rule


def test_training_on_the_builtin_task_clearly_beats_chance(digits, tmp_path):
    network = Network("hopfield", (64, 32, 10), seed=0, dtype=torch.float32)
    rule = CenteredEP(0.5, TorchEngine(max_steps=20, tol=0.0))
    metrics = train(network, rule, *digits, TrainConfig(epochs=4, batch_size=32, lr=0.2),
                    out_dir=tmp_path, progress=False)
    assert float(metrics.test_accuracy[-1]) > 0.6  # chance is 0.1
    assert float(metrics.train_loss[-1]) < float(metrics.train_loss[0])
    saved = xr.open_dataset(tmp_path / "metrics.nc")
    assert list(saved.epoch.values) == [1, 2, 3, 4]
    assert saved.attrs["rule"] == "centered"


def test_resume_gives_exactly_the_uninterrupted_weights(digits, tmp_path):
    config = TrainConfig(epochs=3, batch_size=50, lr={"W1": 0.1, "default": 0.05},
                         momentum=0.5, persistent_particles=True, seed=4)
    reference, rule = _setup()
    train(reference, rule, *digits, config, progress=False)
    interrupted, rule = _setup()
    train(interrupted, rule, *digits, TrainConfig(**{**config.as_dict(), "epochs": 2}),
          out_dir=tmp_path, progress=False)
    resumed, rule = _setup(seed=0)
    metrics = train(resumed, rule, *digits, config, out_dir=tmp_path, resume=True,
                    progress=False)
    assert list(metrics.epoch.values) == [1, 2, 3]
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "training.epochs"), ("optimizer", "rmsprop", "training.optimizer"),
    ("lr", -1.0, "training.lr"), ("on_nonconvergence", "panic", "on_nonconvergence"),
    ("lr", True, "training.lr"), ("momentum", True, "training.momentum"),
    ("limit_train", True, "training.limit_train"), ("seed", True, "training.seed"),
    ("seed", -1, "training.seed must be a whole number of at least 0"),
    ("seed", 2**40, "training.seed must be at most 4,294,967,295"),
    ("persistent_particles", "yes", "persistent_particles must be true or false"),
])
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match="momentum 0.9 is an SGD setting"):
        TrainConfig(optimizer="adam", momentum=0.9)


def test_any_mapping_of_rates_is_a_rate_table():
    from types import MappingProxyType

    config = TrainConfig(lr=MappingProxyType({"W1": 0.1, "default": 0.05}))
    assert config.lr == {"W1": 0.1, "default": 0.05} and type(config.lr) is dict


def test_unknown_learning_rate_key_and_wrong_width(digits):
    network, rule = _setup()
    with pytest.raises(ConfigError, match="unknown parameter 'W9'"):
        train(network, rule, *digits, TrainConfig(epochs=1, lr={"W9": 0.1}), progress=False)
    with pytest.raises(ConfigError, match=r"no rate for parameter 'W2'; give it one or add "
                                          r"'default' \(keys: W1, W2, b1, b2, default\)"):
        train(network, rule, *digits, TrainConfig(epochs=1, lr={"W1": 0.1}), progress=False)
    # the readout's parameters go by "readout" or their full names, not by short ones that
    # would have been taken and ignored; an identity readout has none
    with pytest.raises(ConfigError, match=r"unknown parameter 'readout'; .* \(the readout has "
                                          r"no parameters\)"):
        train(network, rule, *digits, TrainConfig(epochs=1, lr={"readout": 0.1}),
              progress=False)
    from neuroeq import Readout

    linear = Network("hopfield", (64, 16, 12), readout=Readout(12, 10, kind="linear"))
    with pytest.raises(ConfigError, match=r"unknown parameter 'weight'; known: W1, W2, b1, "
                                          "b2, readout, default"):
        train(linear, rule, *digits, TrainConfig(epochs=1, lr={"weight": 0.9, "default": 0.1}),
              progress=False)
    small = Network("hopfield", (10, 5, 10))
    with pytest.raises(ConfigError, match="64 features"):
        train(small, rule, *digits, TrainConfig(epochs=1), progress=False)


def test_data_that_do_not_fit_the_network_are_named_before_any_epoch(digits, monkeypatch):
    """The test set is checked with the training set, up front, not after an epoch."""
    from neuroeq.data import LabeledData
    from neuroeq.training import trainer

    train_data, _ = digits
    epochs = []
    monkeypatch.setattr(trainer, "_train_epoch",
                        lambda *args, **kwargs: epochs.append(1) or {})
    rule = CenteredEP(beta=0.5, engine=TorchEngine(tol=0.0, max_steps=5))
    narrow = LabeledData(torch.rand(10, 32), torch.zeros(10, dtype=torch.long), 10, "narrow")
    with pytest.raises(ConfigError, match="data set 'narrow' has 32 features"):
        train(Network("hopfield", (64, 8, 10)), rule, train_data, narrow,
              TrainConfig(epochs=1), progress=False)
    with pytest.raises(ConfigError, match="has 10 classes, the network's readout predicts 5"):
        train(Network("hopfield", (64, 8, 5)), rule, train_data, None, TrainConfig(epochs=1),
              progress=False)
    assert epochs == []


def test_the_progress_bar_redraws_rarely_into_a_log(digits, capsys):
    """Into a file or a pipe (not a terminal) the bar is drawn when it starts and cleared
    when it ends, not redrawn at every batch (one line of output per batch in a job log)."""
    network, rule = _setup()
    train(network, rule, digits[0], None, TrainConfig(epochs=1, batch_size=20, lr=0.1),
          progress=True)  # 30 batches
    err = capsys.readouterr().err
    assert "epoch 1/1" in err
    assert err.count("\r") <= 4, err


def test_resuming_with_another_thread_count_says_so(digits, tmp_path):
    """Bit-for-bit resumption holds at the thread count the run was made with; a resume at
    another count warns, naming both."""
    import warnings

    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    network, rule = _setup()
    train(network, rule, digits[0], None, TrainConfig(epochs=1, batch_size=100, lr=0.1),
          out_dir=tmp_path, progress=False)
    try:
        torch.set_num_threads(other)
        network, rule = _setup()
        with pytest.warns(RuntimeWarning, match=f"resuming with {other} torch CPU thread.*"
                                                f"made with {before}"):
            train(network, rule, digits[0], None, TrainConfig(epochs=2, batch_size=100, lr=0.1),
                  out_dir=tmp_path, resume=True, progress=False)
        network, rule = _setup()  # the checkpoint now holds this count: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            train(network, rule, digits[0], None, TrainConfig(epochs=3, batch_size=100, lr=0.1),
                  out_dir=tmp_path, resume=True, progress=False)
    finally:
        torch.set_num_threads(before)


def test_unsettled_training_keeps_the_rule_and_says_what_it_measured(digits, tmp_path):
    """An engine that never settles (3 steps to tol 1e-8): "skip" skips every batch (the
    epoch's train loss and accuracy are NaN, with a warning, not 0); the rule keeps the
    engine it was given; "stop" raises after writing the metrics of the epochs done."""
    train_data, test_data = load_dataset("digits", limit=40), load_dataset("digits", "test",
                                                                            limit=20)
    engine = TorchEngine(max_steps=3, tol=1e-8)
    rule = CenteredEP(0.5, engine)
    network = Network("hopfield", (64, 16, 10), dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="epoch 1: all 3 batches were skipped"):
        metrics = train(network, rule, train_data, test_data, TrainConfig(
            epochs=1, batch_size=16, on_nonconvergence="skip"), progress=False)
    assert int(metrics.skipped_batches[0]) == 3
    assert int(metrics.test_unsettled_samples[0]) == 20  # the test phases are counted too
    assert metrics.train_loss.isnull().all() and metrics.train_accuracy.isnull().all()
    assert rule.engine is engine and engine.on_failure == "raise"
    settling = CenteredEP(0.5, TorchEngine(max_steps=20, tol=0.0))
    out = tmp_path / "stopped"
    train(network, settling, train_data, test_data, TrainConfig(
        epochs=1, batch_size=16, on_nonconvergence="stop"), out_dir=out, progress=False)
    with pytest.raises(RelaxationError) as error:
        train(network, rule, train_data, test_data, TrainConfig(
            epochs=2, batch_size=16, on_nonconvergence="stop"), out_dir=out, resume=True,
            progress=False)
    assert "it happened in the training of epoch 2; the metrics of epochs 1-1" in " ".join(
        error.value.__notes__)
    assert list(xr.open_dataset(out / "metrics.nc").epoch.values) == [1]


def test_a_resume_from_python_keeps_the_settings_of_its_checkpoint(digits, tmp_path):
    network, rule = _setup()
    config = TrainConfig(epochs=2, batch_size=64, lr=0.05, limit_train=128, limit_test=64)
    train(network, rule, *digits, config, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"training settings differ from its checkpoint: "
                                          r"lr \(0.05 -> 100.0\)"):
        train(network, rule, *digits, TrainConfig(**{**config.as_dict(), "lr": 100.0,
                                                     "epochs": 3}),
              out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="holds 2 epochs; epochs=1 asks for fewer"):
        train(network, rule, *digits, TrainConfig(**{**config.as_dict(), "epochs": 1}),
              out_dir=tmp_path, resume=True, progress=False)
    with pytest.warns(RuntimeWarning, match="no checkpoint in .*: training starts at epoch 1"):
        train(network, rule, *digits, TrainConfig(**{**config.as_dict(), "epochs": 1}),
              out_dir=tmp_path / "empty", resume=True, progress=False)


def test_empty_data_sets_are_named():
    from neuroeq.data import LabeledData

    network, rule = _setup()
    empty = LabeledData(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long), 10, "empty")
    some = LabeledData(torch.rand(4, 64), torch.zeros(4, dtype=torch.long), 10, "some")
    with pytest.raises(ConfigError, match="training set 'empty' is empty"):
        train(network, rule, empty, None, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ConfigError, match="test set 'empty' is empty"):
        train(network, rule, some, empty, TrainConfig(epochs=1), progress=False)


def test_training_leaves_the_callers_global_random_state_alone(digits):
    network, rule = _setup()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(network, rule, digits[0], None, TrainConfig(epochs=1, limit_train=64, seed=0),
          progress=False)
    assert torch.equal(torch.rand(3), expected)


_GOOD_ROW = {"epoch": 1, "network": {}, "optimizer": {"param_groups": []},
             "history": [{"epoch": 1, "test_accuracy": float("nan")}]}


@pytest.mark.parametrize("layout, message", [
    ([1, 2], "holds a list, not a table"),
    ({"epoch": 1, "network": {}, "optimizer": {}}, "its 'history' should be a list, it holds "
                                                   "nothing"),
    ({"epoch": "x", "network": {}, "optimizer": {}, "history": []}, "its 'epoch' should be"),
    ({"epoch": 3, "network": {}, "optimizer": {}, "history": [{}]}, "says epoch 3 but holds 1"),
    ({"epoch": 2, "network": {}, "optimizer": {}, "history": [1, 2]},
     "history row 1 is not the metrics of epoch 1"),
    ({"epoch": 1, "network": {}, "optimizer": {}, "history": [{"epoch": 1}]},
     "history row 1 is not"),
    ({**_GOOD_ROW, "config": [1]}, "its 'config' should be a table, it holds list"),
    ({**_GOOD_ROW, "torch_threads": "x"}, "its 'torch_threads' should be a whole number"),
    ({**_GOOD_ROW, "optimizer": {"param_groups": "x"}}, "no list of parameter groups"),
])
def test_a_checkpoint_that_is_not_a_training_checkpoint_is_named(digits, tmp_path, layout,
                                                                 message):
    from neuroeq.training import save_checkpoint

    save_checkpoint(tmp_path / "checkpoint.pt", layout)
    network, rule = _setup()
    with pytest.raises(ConfigError, match=message):
        train(network, rule, *digits, TrainConfig(epochs=4), out_dir=tmp_path, resume=True,
              progress=False)


def test_evaluation_does_not_change_what_a_spiking_run_learns():
    """The spiking engine seeds each phase from a running count: the test set's phases
    must not move it, or eval_batch_size (a setting a resume may change) would change the
    weights."""
    from neuroeq.engines.brian2_spiking import SpikingEngine
    from neuroeq.rules.stochastic_ep import StochasticEP

    data = load_dataset("digits", limit=24), load_dataset("digits", "test", limit=12)
    weights = []
    for eval_batch_size in (12, 4):
        network = Network("spiking_rate", (64, 6, 10), seed=0, gain=0.5, bias_init=0.5)
        rule = StochasticEP(0.5, SpikingEngine(target="numpy", window=20, burn_in=5, seed=1))
        train(network, rule, *data, TrainConfig(epochs=2, batch_size=12, lr=0.1,
                                                eval_batch_size=eval_batch_size),
              progress=False)
        weights.append(network.weights["W1"].detach().clone())
    assert torch.equal(*weights)


def test_resuming_at_the_epoch_a_run_stopped_evaluates_that_final_epoch(digits, tmp_path):
    """A run of 3 epochs (eval_every 5) stopped after epoch 2; resumed with epochs = 2, the
    final epoch is evaluated as every run's final epoch is (it had NaN test metrics and the
    result folder's figures failed on them)."""
    def stop_in_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    config = TrainConfig(epochs=3, eval_every=5, limit_train=64, limit_test=32)
    network, rule = _setup()
    with pytest.raises(KeyboardInterrupt):
        train(network, rule, *digits, config, out_dir=tmp_path, progress=False,
              on_epoch=stop_in_epoch_3)
    network, rule = _setup()
    metrics = train(network, rule, *digits,
                    TrainConfig(epochs=2, eval_every=5, limit_train=64, limit_test=32),
                    out_dir=tmp_path, resume=True, progress=False)
    assert list(metrics.epoch.values) == [1, 2]
    assert metrics.test_accuracy.isnull().values.tolist() == [True, False]
    assert metrics.test_unsettled_samples.dtype == float


class _Recording(ClassicEP):
    """ClassicEP that records, per batch, its inputs, start state, free state, gradient
    and the weights it was called with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def estimate(self, network, batch, *, init=None, **kwargs):
        weights = network.weights["W1"].detach().clone()
        estimate = super().estimate(network, batch, init=init, **kwargs)
        self.calls.append({"x": batch[0].clone(), "init": None if init is None else init.clone(),
                           "free": estimate.free.state.detach().clone(), "weights": weights,
                           "grad": estimate.grads["weights.W1"].detach().clone()})
        return estimate


def test_epochs_reshuffle_decay_the_rate_and_carry_the_particles(digits):
    """Each epoch has its own order, lr_decay scales the rate per epoch (lr·decay^(epoch-1)),
    and persistent particles start each sample where its last free phase ended."""
    network = Network("hopfield", (64, 32, 10), seed=0, dtype=torch.float64)
    rule = _Recording(0.5, TorchEngine(max_steps=20, tol=0.0))
    config = TrainConfig(epochs=2, batch_size=25, lr=0.1, lr_decay=0.5, limit_train=100,
                         persistent_particles=True, seed=3)
    train(network, rule, digits[0], None, config, progress=False)
    first, second = rule.calls[:4], rule.calls[4:]
    assert len(second) == 4
    order = [torch.cat([c["x"] for c in epoch]) for epoch in (first, second)]
    assert not torch.equal(order[0], order[1])  # reshuffled ...
    assert torch.equal(order[0].sum(0), order[1].sum(0))  # ... the same samples
    # the rate: SGD moves W1 by -lr·g between consecutive batches
    rates = [float(-((b["weights"] - a["weights"]) * a["grad"]).sum() / (a["grad"] ** 2).sum())
             for a, b in zip(rule.calls[:-1], rule.calls[1:], strict=True)]
    torch.testing.assert_close(torch.tensor(rates), torch.tensor([0.1] * 4 + [0.05] * 3),
                               rtol=1e-9, atol=0)
    # the particles: epoch 2 starts each sample from its free state of epoch 1
    ended = {tuple(x.tolist()): free for c in first for x, free in zip(c["x"], c["free"],
                                                                       strict=True)}
    initial = network.initial_state(1)[0]
    for call in second:
        for x, init in zip(call["x"], call["init"], strict=True):
            assert torch.equal(init, ended[tuple(x.tolist())])
            assert not torch.equal(init, initial)


def _exploding(data, scale=1e30):
    """The same samples scaled until the linear model's states leave every bound."""
    import dataclasses

    return dataclasses.replace(data, x=data.x * scale)


def test_a_diverging_test_set_is_counted_or_ends_the_run_with_the_metrics_kept(tmp_path):
    """Under continue/skip a test batch whose relaxation diverges counts as unsettled and
    wrong (the run goes on); under stop the error names the epoch's test evaluation and
    the metrics of the epochs before are written."""
    train_data = load_dataset("digits", limit=64)
    test_data = _exploding(load_dataset("digits", "test", limit=40))
    rule = CenteredEP(0.5, TorchEngine(max_steps=30, tol=0.0))

    def network():
        return Network("linear", (64, 16, 10), seed=0, dtype=torch.float32, gain=0.5)

    metrics = train(network(), rule, train_data, test_data, TrainConfig(
        epochs=1, batch_size=32, lr=0.01, eval_batch_size=16), progress=False)
    assert int(metrics.skipped_batches[0]) == 0  # the training set settles
    assert int(metrics.test_unsettled_samples[0]) == 40
    assert float(metrics.test_accuracy[0]) == 0.0 and metrics.test_loss.isnull().all()
    config = TrainConfig(epochs=2, batch_size=32, lr=0.01, eval_every=2,
                         on_nonconvergence="stop")
    with pytest.raises(RelaxationError) as error:
        train(network(), rule, train_data, test_data, config, out_dir=tmp_path,
              progress=False)
    notes = " ".join(error.value.__notes__)
    assert "it happened in the test evaluation of epoch 2" in notes
    assert "the metrics of epochs 1-1 are in" in notes
    assert list(xr.open_dataset(tmp_path / "metrics.nc").epoch.values) == [1]


def test_diverging_training_batches_are_counted_unsettled_and_skipped():
    """A batch that diverges is left out and counted in both; an epoch in which every
    batch diverged ends the run (nothing is left to learn from)."""
    import dataclasses

    from neuroeq.errors import TrainingError

    data = load_dataset("digits", limit=64)
    one_bad = dataclasses.replace(data, x=torch.cat([data.x[:1] * 1e30, data.x[1:]]))
    rule = CenteredEP(0.5, TorchEngine(max_steps=30, tol=0.0))

    def network():
        return Network("linear", (64, 16, 10), seed=0, dtype=torch.float32, gain=0.5)

    metrics = train(network(), rule, one_bad, None,
                    TrainConfig(epochs=1, batch_size=32, lr=0.01), progress=False)
    assert int(metrics.unsettled_batches[0]) == int(metrics.skipped_batches[0]) == 1
    assert bool(metrics.train_loss.notnull().all())  # the other batch was learned from
    with pytest.raises(TrainingError, match="every batch of epoch 1 diverged"):
        train(network(), rule, _exploding(data), None,
              TrainConfig(epochs=1, batch_size=32, lr=0.01), progress=False)


def test_parameters_that_become_nan_or_inf_end_the_run(tmp_path):
    """(Here a readout weight is set to inf after epoch 1, as an overflowing step would.)
    The error names the parameter; epoch 1's metrics stay, with the caller's attributes."""
    from neuroeq.errors import TrainingError
    from neuroeq.readout import Readout

    data = load_dataset("digits", limit=64)
    network = Network("hopfield", (64, 16, 10), seed=0, dtype=torch.float32,
                      readout=Readout(10, 10, kind="linear", dtype=torch.float32))
    rule = CenteredEP(0.5, TorchEngine(max_steps=20, tol=0.0))

    def overflow(row):
        with torch.no_grad():
            network.readout.weight[0, 0] = float("inf")

    with pytest.raises(TrainingError, match=r"the parameters readout\.weight became NaN or "
                                            r"inf in epoch 2: the learning rate is too large"
                       ) as error:
        train(network, rule, data, None, TrainConfig(epochs=3, batch_size=32),
              out_dir=tmp_path, progress=False, attrs={"protocol": "p"}, on_epoch=overflow)
    assert "the metrics of epochs 1-1 are in" in " ".join(error.value.__notes__)
    with xr.open_dataset(tmp_path / "metrics.nc") as saved:
        assert list(saved.epoch.values) == [1] and saved.attrs["protocol"] == "p"


def test_learning_rates_a_parameter_cannot_take_are_refused():
    from neuroeq.training.trainer import make_optimizer

    network = Network("hopfield", (64, 16, 10), seed=0, dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"gives parameter 'W1' two rates \('W1' = 0.1 and "
                                          r"'weights.W1' = 0.5\)"):
        make_optimizer(network, TrainConfig(lr={"W1": 0.1, "weights.W1": 0.5,
                                                "default": 0.05}))
    with pytest.raises(ConfigError, match=r"training.lr 1e\+39 for 'W1' is beyond the range "
                                          r"of the network's float32"):
        make_optimizer(network, TrainConfig(lr=1e39))


def test_the_metrics_file_carries_the_callers_attributes(tmp_path):
    data = load_dataset("digits", limit=64)
    network, rule = _setup()
    returned = train(network, rule, data, None, TrainConfig(epochs=1, batch_size=32),
                     out_dir=tmp_path, progress=False, attrs={"protocol": "p", "kind": "k"})
    with xr.open_dataset(tmp_path / "metrics.nc") as saved:
        for metrics in (saved, returned):
            assert (metrics.attrs["protocol"], metrics.attrs["kind"]) == ("p", "k")


def test_a_config_of_numpy_and_torch_scalars_resumes_exactly(digits, tmp_path):
    """Numbers given as numpy or torch scalars are kept as Python numbers: the checkpoint
    reads back with weights_only (it was refused as corrupt) and the resume is exact."""
    import numpy as np

    from neuroeq.training import load_checkpoint

    def config(epochs):
        return TrainConfig(epochs=np.int64(epochs), batch_size=np.int32(32),
                           lr={"W1": np.float32(0.1), "default": torch.tensor(0.05)},
                           lr_decay=np.float64(0.9), momentum=torch.tensor(0.5),
                           seed=np.int64(2), limit_train=np.int64(128), limit_test=64,
                           extra={"note": np.int64(1), "scale": [np.float32(0.5)]})

    reference, rule = _setup()
    train(reference, rule, *digits, config(2), progress=False)
    network, rule = _setup()
    train(network, rule, *digits, config(1), out_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["extra"] == {
        "note": 1, "scale": [0.5]}
    network, rule = _setup()
    metrics = train(network, rule, *digits, config(2), out_dir=tmp_path, resume=True,
                    progress=False)
    assert list(metrics.epoch.values) == [1, 2]
    assert torch.equal(network.weights["W1"], reference.weights["W1"])


def test_a_resume_with_no_epoch_left_writes_the_final_evaluation(digits, tmp_path):
    """Stopped after epoch 2 of 4 (eval_every 4), resumed with epochs = 2: the final epoch
    is evaluated, and metrics.nc and the checkpoint keep what train() returns."""
    import numpy as np

    from neuroeq.training import load_checkpoint

    def stop_in_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    settings = {"eval_every": 4, "limit_train": 64, "limit_test": 32}
    network, rule = _setup()
    with pytest.raises(KeyboardInterrupt):
        train(network, rule, *digits, TrainConfig(epochs=4, **settings), out_dir=tmp_path,
              progress=False, on_epoch=stop_in_epoch_3)
    network, rule = _setup()
    returned = train(network, rule, *digits, TrainConfig(epochs=2, **settings),
                     out_dir=tmp_path, resume=True, progress=False)
    assert returned.test_accuracy.isnull().values.tolist() == [True, False]
    with xr.open_dataset(tmp_path / "metrics.nc") as saved:
        for name in returned.data_vars:
            if name not in ("samples_per_second", "epoch_seconds"):
                np.testing.assert_array_equal(saved[name].values, returned[name].values, name)
    history = load_checkpoint(tmp_path / "checkpoint.pt")["history"]
    np.testing.assert_array_equal([row["test_accuracy"] for row in history],
                                  returned.test_accuracy.values)


def _random_sign_rule(seed):
    return Network("hopfield", (64, 16, 10), seed=0), ClassicEP(
        0.5, TorchEngine(max_steps=20, tol=0.0), random_sign=True, seed=seed)


def _gibbs_rule(seed):
    from neuroeq.rules import FiniteNudgeEP

    return Network("linear", (64, 8, 10), seed=0, gain=0.5), FiniteNudgeEP(
        0.5, TorchEngine(max_steps=20, tol=0.0), temperature=0.05, chains=4, groups=2,
        burn_in=2, samples=2, thin=1, seed=seed)


def _spiking_rule(seed):
    from neuroeq.engines.brian2_spiking import SpikingEngine
    from neuroeq.rules.stochastic_ep import StochasticEP

    return (Network("spiking_rate", (64, 6, 10), seed=0, gain=0.5, bias_init=0.5),
            StochasticEP(0.5, SpikingEngine(target="numpy", window=20, burn_in=5, seed=1)))


@pytest.mark.parametrize("make", [_random_sign_rule, _gibbs_rule, _spiking_rule])
def test_a_run_is_reproduced_by_its_training_seed_alone(digits, make):
    """A rule used before (by another train() call) or made with another seed of its own
    learns what a fresh rule learns: train() restarts the rule's random streams (random
    signs of beta, Langevin noise, the spiking engine's phase count) from training.seed."""
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, limit_train=32, limit_test=16,
                         seed=5)
    weights = []
    network, rule = make(0)
    train(network, rule, *digits, config, progress=False)
    weights.append(network.weights["W1"].detach().clone())
    network, _ = make(0)  # the same rule again, on a fresh network
    train(network, rule, *digits, config, progress=False)
    weights.append(network.weights["W1"].detach().clone())
    network, rule = make(7)  # a rule seeded otherwise
    train(network, rule, *digits, config, progress=False)
    weights.append(network.weights["W1"].detach().clone())
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])


def test_the_training_seed_sets_the_random_signs(digits):
    """Two training seeds draw other signs of beta (on the same batches: one batch)."""
    config = {"epochs": 1, "batch_size": 64, "lr": 0.05, "limit_train": 64}
    runs = []
    for seed in range(4):
        network, rule = _random_sign_rule(0)
        signs = []
        rule.estimate = _recording_signs(rule.estimate, signs)
        train(network, rule, digits[0], None, TrainConfig(seed=seed, **config),
              progress=False)
        runs.append(signs)
    assert all(len(signs) == 1 for signs in runs) and len({s[0] for s in runs}) == 2


def _recording_signs(estimate, signs):
    def recorded(*args, **kwargs):
        result = estimate(*args, **kwargs)
        signs.extend(result.nudged)
        return result
    return recorded


def test_a_random_state_the_default_reseed_cannot_restart_is_named(digits):
    """The default reseed restarts generator states and counters; anything else must be
    restarted by the rule itself."""
    class _Drifting(ClassicEP):
        def random_state(self):
            return {"temperature": torch.tensor(0.5)}

    network = Network("hopfield", (64, 16, 10), seed=0)
    with pytest.raises(TypeError, match="rule 'ep''s random state 'temperature' is neither "
                                        "a torch generator's state nor a counter"):
        train(network, _Drifting(0.5), digits[0], None, TrainConfig(epochs=1), progress=False)
