"""Turning a validated protocol's sections into the objects they describe: the neuron
model, the network, the relaxation engine, the rule and the data sets."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from neuroeq.data import LabeledData, load_dataset
from neuroeq.engines.settings import DTYPES
from neuroeq.engines.torch_engine import TorchEngine
from neuroeq.errors import ConfigError
from neuroeq.network import Network
from neuroeq.neuron_model import NeuronModel, load_model
from neuroeq.protocols.schema import RULE_KEYS
from neuroeq.readout import Readout
from neuroeq.rules import make_rule, rule_class, rule_options
from neuroeq.rules.base import GradientEstimator
from neuroeq.training import TrainConfig

if TYPE_CHECKING:
    from neuroeq.engines import Engine

MS = 1e-3


def build_model(config: dict[str, dict[str, Any]]) -> NeuronModel:
    """The ``[model]`` section: a model file with parameter overrides (none where the
    protocol's kind does not read them)."""
    section = config["model"]
    return load_model(section["name"], **section.get("parameters", {}))


def build_network(config: dict[str, dict[str, Any]], model: NeuronModel | None = None,
                  n_classes: int | None = None, **changes: Any) -> Network:
    """The ``[network]`` section (``changes`` override single keys, e.g. ``alpha``).
    ``n_classes``: the data's classes, when there are data (a linear readout without them
    predicts 10). An ``alpha`` that is ``None`` or absent (the resolved protocol's, for a
    coupling other than asymmetric) is not passed on: the network takes its default."""
    section = {**config["network"], **changes}
    model = model or build_model(config)
    dtype = DTYPES[section["dtype"]]
    n_out = section["sizes"][-1]
    if section["readout"] == "identity" and n_classes is not None and n_classes != n_out:
        raise ConfigError(f"[network] sizes ends in {n_out} output units but the data have "
                          f"{n_classes} classes: an identity readout needs one unit per "
                          f"class; make the last size {n_classes} or set "
                          'readout = "linear"')
    linear_classes = 10 if n_classes is None else n_classes
    readout = Readout(n_out, linear_classes if section["readout"] == "linear" else None,
                      kind=section["readout"], cost=section["cost"],
                      seed=section["seed"], dtype=dtype)
    return Network(model, section["sizes"], coupling=section["coupling"],
                   alpha=section.get("alpha"), lateral=section["lateral"], skip=section["skip"],
                   readout=readout, seed=section["seed"], gain=section["gain"],
                   bias_init=section["bias_init"], dtype=dtype)


def build_engine(config: dict[str, dict[str, Any]]) -> Engine:
    """The ``[engine]`` section: a :class:`TorchEngine`, a ``Brian2Engine`` or (``spiking``)
    a ``SpikingEngine`` (``dt_ms``, ``free_steps``, ``tol``, ``burn_in``, ``window``;
    ``None`` means the model file's value). The spiking engine is seeded from
    ``[training].seed``."""
    section = config["engine"]
    dt = section["dt_ms"] * MS if section["dt_ms"] is not None else None
    if section["name"] == "spiking":
        from neuroeq.engines.brian2_spiking import SpikingEngine

        return SpikingEngine(target=section["target"], dt=dt, burn_in=section["burn_in"],
                             window=section["window"], replicas=section["replicas"] or 1,
                             seed=config.get("training", {}).get("seed", 0))
    # keys left out keep the engine's own defaults (the schema allows each per engine)
    optional = {key: section[key] for key in ("check_every", "nudge_every")
                if section.get(key) is not None}
    if section["name"] == "brian2":
        from neuroeq.engines.brian2_engine import Brian2Engine

        if section["solver"] != "euler":
            raise ConfigError("[engine].solver: the Brian2 engine integrates with Euler only")
        return Brian2Engine(target=section["target"], dt=dt, max_steps=section["free_steps"],
                            tol=section["tol"], **optional)
    optional.update({key: section[key]
                     for key in ("anderson_memory", "anderson_mixing", "over_relaxation")
                     if section.get(key) is not None})
    return TorchEngine(dt=dt, max_steps=section["free_steps"], tol=section["tol"],
                       solver=section["solver"], **optional)


def build_rule(config: dict[str, dict[str, Any]], model: NeuronModel,
               engine: TorchEngine | None = None, name: str | None = None) -> GradientEstimator:
    """The ``[rule]`` section (``name`` overrides its rule name, for sweeps over rules).

    Each ``[rule]`` key the rule's constructor takes is passed on (keys left out keep the
    rule's defaults); so are ``[engine].nudged_steps`` and ``[training].seed`` (the random
    sign of β, the Langevin sampler), where the rule takes them."""
    section = config.get("rule", {"name": name, "beta": 0.5})
    name = name or section["name"]
    engine = engine or build_engine(config)
    rule = rule_class(name)
    accepted = rule_options(rule)
    if rule.uses_spike_statistics and not model.spiking:
        raise ConfigError(f"[rule].name {name!r}: [model].name {model.name!r} has no "
                          "[spiking] table; use a spiking model such as spiking_rate")
    options: dict[str, Any] = {option: section[key] for key, option in RULE_KEYS.items()
                               if section.get(key) is not None and option in accepted}
    if "dt" in options:
        options["dt"] *= MS
    if "seed" in accepted:
        options["seed"] = config.get("training", {}).get("seed", 0)
    if "nudged_steps" in accepted:
        options["nudged_steps"] = config["engine"]["nudged_steps"]
    try:
        return make_rule(name, beta=section.get("beta", 0.5), engine=engine,
                         model_class=model.structural_class, **options)
    except ConfigError as error:
        raise ConfigError(f"[rule] ({name}): {error}") from None


def build_data(config: dict[str, dict[str, Any]]) -> tuple[LabeledData, LabeledData]:
    """The ``[data]`` section: train and test sets (limits from ``[training]``)."""
    section, training = config["data"], config["training"]
    train = load_dataset(section["name"], "train", section["root"], training["limit_train"])
    with warnings.catch_warnings():  # the unread root is said once, for the training split
        warnings.filterwarnings("ignore", "data set .* is built in", RuntimeWarning)
        test = load_dataset(section["name"], "test", section["root"], training["limit_test"])
    return train, test


def build_train_config(config: dict[str, dict[str, Any]]) -> TrainConfig:
    """The ``[training]`` section as a :class:`TrainConfig`."""
    return TrainConfig(**config["training"])
