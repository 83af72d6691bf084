"""TrainConfig keeps plain Python values, whatever numbers it is given."""

import numpy as np
import pytest
import torch

from neuroeq.errors import ConfigError
from neuroeq.training import TrainConfig


def _scalars_everywhere() -> TrainConfig:
    """A config whose every number is a numpy or torch scalar."""
    return TrainConfig(epochs=np.int64(2), batch_size=torch.tensor(32), optimizer=np.str_("sgd"),
                       lr={np.str_("W1"): np.float32(0.1), "default": torch.tensor(0.05)},
                       lr_decay=np.float64(0.9), momentum=np.float32(0.5),
                       weight_decay=torch.tensor(0.0, dtype=torch.float64),
                       persistent_particles=np.bool_(True), eval_every=np.int32(1),
                       seed=np.uint32(3), limit_train=np.int64(64), limit_test=np.int16(32),
                       extra={"note": np.int64(1), "pair": (np.float32(0.5), torch.tensor(2)),
                              "nested": {"flag": np.bool_(False), "none": None}})


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (str, int, float, bool, type(None))


def test_numpy_and_torch_scalars_become_python_values():
    config = _scalars_everywhere()
    for name, value in config.as_dict().items():
        assert _plain(value), (name, value, type(value))
    assert config.lr_decay == 0.9 and config.persistent_particles is True
    assert config.extra == {"note": 1, "pair": [0.5, 2], "nested": {"flag": False, "none": None}}


def test_a_float32_decay_is_a_decay():
    assert TrainConfig(lr_decay=np.float32(0.5)).lr_decay == 0.5


@pytest.mark.parametrize("extra, message", [
    ({"note": {1, 2}}, r"training.extra\['note'\] holds a set"),
    ({"a": [1, object()]}, r"training.extra\['a'\]\[1\] holds a object"),
    ({"a": {"b": np.zeros(3)}}, r"training.extra\['a'\]\['b'\] holds a ndarray"),
    ({"a": 1j}, r"training.extra\['a'\] holds a complex"),
    ({1: "x"}, "training.extra has the key 1: a table's keys must be strings"),
    ([1, 2], "training.extra must be a table, got list"),
])
def test_extra_that_a_checkpoint_cannot_hold_is_named(extra, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(extra=extra)


@pytest.mark.parametrize("field, value, message", [
    ("lr_decay", np.float64(1.5), r"lr_decay must lie in \(0, 1\], got 1.5"),
    ("lr_decay", "0.9", r"lr_decay must lie in \(0, 1\], got '0.9'"),
    ("lr_decay", np.bool_(True), r"lr_decay must lie in \(0, 1\], got True"),
    ("epochs", np.float32(2.5), "training.epochs must be a whole number"),
    ("lr", {1: 0.1}, "training.lr names parameters by strings"),
])
def test_bad_scalars_are_refused_by_name(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})
