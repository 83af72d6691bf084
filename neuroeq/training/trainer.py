"""The training loop: minibatches, a rule writing ``param.grad``, any ``torch.optim``
optimizer, persistent particles, evaluation, per-epoch metrics and checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import did_you_mean, within_dtype
from neuroeq.data import LabeledData
from neuroeq.engines.settings import RelaxationSettings
from neuroeq.errors import ConfigError, RelaxationError, TrainingError
from neuroeq.io import software_attrs, write_netcdf
from neuroeq.network import Network
from neuroeq.progress import progress_bar
from neuroeq.rules.base import GradientEstimator
from neuroeq.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from neuroeq.training.config import TrainConfig

METRICS_NAME = "metrics.nc"


def rate_per_parameter(network: Network, rates: Mapping[str, float], where: str = ""
                       ) -> dict[str, float]:
    """The learning rate of each of ``network``'s parameters (full names) from a
    ``training.lr`` table: a key is a short name (``W1``, ``b1``: the dynamics'), a full one
    (``readout.weight``, ``weights.W1``), ``readout`` (the readout's group) or ``default``.
    Unknown keys, two rates for one parameter and a parameter without one are refused
    (``where`` prefixes the error)."""
    full_names = [name for name, _ in network.named_parameters()]
    known_short = {name.split(".", 1)[-1] for name in full_names
                   if not name.startswith("readout.")}
    groups_known = ["readout"] if any(n.startswith("readout.") for n in full_names) else []
    known = [*sorted(known_short), *groups_known, "default"]
    for key in rates:
        if key not in ("default", *groups_known) and key not in known_short | set(full_names):
            raise ConfigError(f"{where}training.lr names unknown parameter {key!r}"
                              f"{did_you_mean(key, known)}; known: {', '.join(known)}"
                              + ("" if groups_known else " (the readout has no parameters)"))
    chosen = {}
    for name in full_names:
        short = name.split(".", 1)[-1]
        readout = name.startswith("readout.")
        if name in rates and short in rates and not readout:
            raise ConfigError(f"{where}training.lr gives parameter {short!r} two rates "
                              f"({short!r} = {rates[short]:g} and {name!r} = "
                              f"{rates[name]:g}); give one")
        if name in rates:
            chosen[name] = rates[name]
        elif readout and "readout" in rates:
            chosen[name] = rates["readout"]
        elif short in rates and not readout:
            chosen[name] = rates[short]
        elif "default" in rates:
            chosen[name] = rates["default"]
        else:
            raise ConfigError(f"{where}training.lr has no rate for parameter "
                              f"{name if readout else short!r}; give it one or add 'default' "
                              f"(keys: {', '.join(known)})")
    return chosen


def make_optimizer(network: Network, config: TrainConfig) -> torch.optim.Optimizer:
    """One parameter group per learning rate; ``config.lr`` may name parameters
    (:func:`rate_per_parameter`). A rate, ``momentum`` or ``weight_decay`` beyond the range
    of the network's dtype is refused (the optimizer's step would overflow it)."""
    for name in ("momentum", "weight_decay"):
        within_dtype(getattr(config, name), f"training.{name}", network.dtype)
    rates = config.lr if isinstance(config.lr, dict) else {"default": config.lr}
    chosen = rate_per_parameter(network, rates)
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in network.named_parameters():
        rate = chosen[name]
        within_dtype(float(rate), "training.lr", network.dtype,
                     f" for {name.split('.', 1)[-1]!r}")
        groups.setdefault(float(rate), []).append(param)
    param_groups = [{"params": params, "lr": rate, "base_lr": rate}
                    for rate, params in groups.items()]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=0.0, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(param_groups, lr=0.0, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(network: Network, rule: GradientEstimator, data: LabeledData,
             batch_size: int = 1000, *, skip_diverged: bool = False
             ) -> tuple[float, float, int]:
    """Mean cost and accuracy at the free stationary states, and how many samples' free
    phases did not settle (counted when the engine does not raise). ``skip_diverged``: a
    batch whose relaxation diverges (NaN, inf) counts as unsettled and wrongly predicted,
    and the mean cost is that of the other samples (NaN when none is left); else its
    :class:`RelaxationError` is raised."""
    total_cost, correct, unsettled, costed = 0.0, 0, 0, 0
    for start in range(0, len(data), batch_size):
        x = data.x[start:start + batch_size].to(network.device, network.dtype)
        y = data.y[start:start + batch_size].to(network.device)
        try:
            phase = rule.engine.relax(network, x)
        except RelaxationError:
            if not skip_diverged:
                raise
            unsettled += len(y)
            continue
        state = phase.state
        if phase.failure is not None:
            unsettled += int((~phase.converged).sum())
        total_cost += float(network.cost(state, y).sum())
        costed += len(y)
        correct += int((network.readout.predict(network.output_rates(state)) == y).sum())
    return (total_cost / costed if costed else float("nan")), correct / len(data), unsettled


def _evaluate_into(row: dict, network: Network, rule: GradientEstimator, data: LabeledData,
                   config: TrainConfig) -> None:
    """An epoch's test metrics, written into its row. The rule's random streams are put
    back afterwards: a spiking engine seeds each phase from a running count, so without
    this how often and in what batches the test set is evaluated would change what the run
    learns (and a resume that changes ``eval_batch_size`` would not be exact)."""
    streams = rule.random_state()
    loss, accuracy, unsettled = evaluate(network, rule, data, config.eval_batch_size,
                                         skip_diverged=config.on_nonconvergence != "stop")
    rule.set_random_state(streams)
    row["test_loss"], row["test_accuracy"] = float(loss), float(accuracy)
    row["test_unsettled_samples"] = int(unsettled)


def _metrics_dataset(history: list[dict], network: Network, rule: GradientEstimator,
                     config: TrainConfig, data_name: str,
                     attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    epochs = [row["epoch"] for row in history]
    names = [k for k in (history[0] if history else {}) if k != "epoch"]
    # test metrics are NaN on the epochs not evaluated: floats throughout, whichever were
    return xr.Dataset(
        {name: ("epoch", np.asarray([row[name] for row in history],
                                    dtype=float if name.startswith("test_") else None))
         for name in names},
        coords={"epoch": epochs},
        attrs={"title": "neuroeq training metrics", "model": network.model.name,
               "rule": rule.name, "dataset": data_name,
               "network": json.dumps(network.describe()),
               "config": json.dumps(config.as_dict(), default=str), **software_attrs(),
               **(attrs or {})})


def train(network: Network, rule: GradientEstimator, train_data: LabeledData,
          test_data: LabeledData | None, config: TrainConfig, out_dir: str | Path | None = None,
          resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None,
          attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Train ``network`` with ``rule`` and return per-epoch metrics (``xarray.Dataset``,
    with ``attrs`` added to its own attributes).

    With ``out_dir``, metrics (``metrics.nc``) and a checkpoint (``checkpoint.pt``) are
    written atomically after every ``checkpoint_every`` epochs; ``resume=True`` continues
    from that checkpoint and ends with exactly the weights of an uninterrupted run. A run
    depends on ``config.seed``, not on what ``rule`` drew before: its random streams are
    restarted from it (:meth:`GradientEstimator.reseed`; on resume, the checkpoint's).
    Parameters that become NaN or inf end the run with a :class:`TrainingError` (the
    metrics of the epochs before are written, as for ``on_nonconvergence = "stop"``).
    """
    for data in (d for d in (train_data, test_data) if d is not None):  # before any epoch
        if data.n_features != network.sizes[0]:
            raise ConfigError(f"data set {data.name!r} has {data.n_features} features, "
                              f"the network's input layer has {network.sizes[0]}")
        if data.n_classes > network.readout.n_classes:
            raise ConfigError(f"data set {data.name!r} has {data.n_classes} classes, the "
                              f"network's readout predicts {network.readout.n_classes}: give "
                              "the output layer one unit per class or a linear readout with "
                              f"n_classes={data.n_classes}")
    rule.check_range(network)  # a beta or a step the network's dtype cannot hold
    if config.limit_train:
        train_data = dataclasses.replace(train_data, x=train_data.x[:config.limit_train],
                                         y=train_data.y[:config.limit_train])
    if test_data is not None and config.limit_test:
        test_data = dataclasses.replace(test_data, x=test_data.x[:config.limit_test],
                                        y=test_data.y[:config.limit_test])
    if len(train_data) == 0:
        raise ConfigError(f"training set {train_data.name!r} is empty")
    if test_data is not None and len(test_data) == 0:
        raise ConfigError(f"test set {test_data.name!r} is empty (pass None to train "
                          "without one)")
    out_dir = Path(out_dir) if out_dir is not None else None
    engine = rule.engine
    if config.on_nonconvergence != "stop" and isinstance(engine, RelaxationSettings):
        # engines that relax to a tolerance (the spiking engine runs fixed windows): their
        # failures are counted per epoch instead of raised, for this training run only
        rule.engine = dataclasses.replace(engine, on_failure="ignore")
    # the run seeds torch's global generator, and gives the caller's state back afterwards
    cuda = [network.device] if network.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(config.seed)
            return _train(network, rule, train_data, test_data, config, out_dir, resume,
                          progress, on_epoch, dict(attrs or {}))
    finally:
        rule.engine = engine


def _train(network: Network, rule: GradientEstimator, train_data: LabeledData,
           test_data: LabeledData | None, config: TrainConfig, out_dir: Path | None,
           resume: bool, progress: bool, on_epoch: Callable[[dict], None] | None,
           attrs: dict[str, Any]) -> xr.Dataset:
    def metrics() -> xr.Dataset:
        return _metrics_dataset(history, network, rule, config, train_data.name, attrs)

    optimizer = make_optimizer(network, config)
    x_all = train_data.x.to(network.device, network.dtype)
    y_all = train_data.y.to(network.device)
    particles = (network.initial_state(len(train_data)) if config.persistent_particles
                 else None)
    history: list[dict] = []
    first_epoch = 1
    checkpoint = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    rule.reseed(config.seed)  # what the rule drew before (another run) changes nothing

    def save(epoch: int) -> None:  # metrics and checkpoint: the same history in both
        write_netcdf(metrics(), out_dir / METRICS_NAME)
        save_checkpoint(checkpoint, {
            "epoch": epoch, "network": network.state_dict(),
            "optimizer": optimizer.state_dict(), "particles": particles,
            "torch_threads": torch.get_num_threads(), "config": config.as_dict(),
            "rule_random_state": rule.random_state(), "history": history})

    if resume and (checkpoint is None or not checkpoint.exists()):
        warnings.warn(f"resume=True but there is no checkpoint "
                      f"{'(no out_dir)' if checkpoint is None else f'in {str(out_dir)!r}'}: "
                      "training starts at epoch 1", RuntimeWarning, stacklevel=3)
    elif resume:
        saved = load_checkpoint(checkpoint)
        check_resumable(saved, config, out_dir)
        try:
            network.load_state_dict(saved["network"])
            optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"the checkpoint in {str(out_dir)!r} was saved from another "
                              f"network or optimizer than this one ({detail}); resume with "
                              "the same settings or start again") from None
        if particles is not None and saved.get("particles") is not None:
            particles = saved["particles"].to(network.device, network.dtype)
        rule.set_random_state(saved.get("rule_random_state", {}))  # (over the reseed)
        history = list(saved["history"])
        first_epoch = int(saved["epoch"]) + 1
        _warn_if_threads_changed(saved.get("torch_threads"))
    if history and test_data is not None and first_epoch > config.epochs \
            and math.isnan(history[-1]["test_accuracy"]):
        # resumed with as many epochs as the checkpoint holds, whose last one was not
        # evaluated (the run stopped before its final epoch): the final epoch always is,
        # and the result folder keeps what is returned
        _evaluate_into(history[-1], network, rule, test_data, config)
        if out_dir is not None:
            save(first_epoch - 1)
    for epoch in range(first_epoch, config.epochs + 1):
        for group in optimizer.param_groups:  # a function of the epoch: resume-safe
            group["lr"] = group["base_lr"] * config.lr_decay ** (epoch - 1)
        stage = "training"
        try:
            row = _train_epoch(network, rule, optimizer, x_all, y_all, particles, config,
                               epoch, progress)
            _check_finite_parameters(network, epoch)
            stage = "test evaluation"
            if test_data is not None and (epoch % config.eval_every == 0
                                          or epoch == config.epochs):
                _evaluate_into(row, network, rule, test_data, config)
            else:
                row["test_loss"], row["test_accuracy"] = float("nan"), float("nan")
                row["test_unsettled_samples"] = float("nan")
        except (RelaxationError, TrainingError) as error:  # "stop", or NaN parameters
            note = f"it happened in the {stage} of epoch {epoch}"
            if getattr(error, "kind", None) in ("diverged", "nan") and epoch > 1:
                note += " (a learning rate too large for the weights can do this)"
            if out_dir is not None and history:
                write_netcdf(metrics(), out_dir / METRICS_NAME)
                note += (f"; the metrics of epochs 1-{epoch - 1} are in "
                         f"{str(out_dir / METRICS_NAME)!r}, the checkpoint holds the last "
                         "epoch it was written at")
            error.add_note(note)
            raise
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if out_dir is not None and (epoch % config.checkpoint_every == 0
                                    or epoch == config.epochs):
            save(epoch)
    return metrics()


def _check_finite_parameters(network: Network, epoch: int) -> None:
    """A :class:`TrainingError` naming the parameters that became NaN or inf (once per
    epoch: a check per step would cost a sync per batch)."""
    bad = [name for name, param in network.named_parameters()
           if not bool(torch.isfinite(param).all())]
    if bad:
        raise TrainingError(f"the parameters {', '.join(bad)} became NaN or inf in epoch "
                            f"{epoch}: the learning rate is too large for them (lower "
                            "training.lr, or give them a rate of their own)")


#: settings a resumed training run may change: how long it trains, how often it writes
#: checkpoints and metrics, and the evaluation batch size (none changes what it learns)
RESUMABLE_TRAINING = ("epochs", "checkpoint_every", "eval_every", "eval_batch_size")


#: what a training checkpoint holds, with the types it must have
CHECKPOINT_LAYOUT = {"epoch": int, "network": dict, "optimizer": dict, "history": list}


def _check_checkpoint_layout(checkpoint: object, out_dir: Path | None) -> None:
    """A :class:`ConfigError` for a checkpoint that is not a training checkpoint (another
    program's file, or one damaged or edited): it names the first entry that is wrong."""
    where = f"the checkpoint in {str(out_dir)!r}"
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{where} is not a training checkpoint (it holds a "
                          f"{type(checkpoint).__name__}, not a table); start again")
    for key, kind in CHECKPOINT_LAYOUT.items():
        value = checkpoint.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "nothing" if key not in checkpoint else type(value).__name__
            raise ConfigError(f"{where} is not a training checkpoint: its {key!r} should be "
                              f"a {kind.__name__}, it holds {found}; start again")
    if checkpoint["epoch"] < 1 or len(checkpoint["history"]) != checkpoint["epoch"]:
        raise ConfigError(f"{where} is damaged: it says epoch {checkpoint['epoch']} but holds "
                          f"{len(checkpoint['history'])} epochs of history; start again")
    for number, row in enumerate(checkpoint["history"], 1):
        if not isinstance(row, dict) or row.get("epoch") != number \
                or not isinstance(row.get("test_accuracy"), float):
            raise ConfigError(f"{where} is damaged: its history row {number} is not the "
                              f"metrics of epoch {number}; start again")
    for key, kind, what in (("config", dict, "table"), ("torch_threads", int, "whole number"),
                            ("particles", torch.Tensor, "tensor"),
                            ("rule_random_state", dict, "table")):
        value = checkpoint.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ConfigError(f"{where} is damaged: its {key!r} should be a {what}, it holds "
                              f"{type(value).__name__}; start again")
    if not isinstance(checkpoint["optimizer"].get("param_groups"), list):
        raise ConfigError(f"{where} is damaged: its optimizer state has no list of parameter "
                          "groups; start again")


def check_resumable(checkpoint: dict[str, Any], config: TrainConfig, out_dir: Path | None
                    ) -> None:
    """A resumed run continues the run in the checkpoint (a loaded checkpoint's payload)
    as it was made: refuse other settings (the optimizer would restore the saved learning
    rates and the metrics record the new ones) and a run that already holds more epochs
    than asked for. The protocol runner calls it before it touches the result folder."""
    _check_checkpoint_layout(checkpoint, out_dir)
    saved, done = checkpoint.get("config"), int(checkpoint["epoch"])
    if config.epochs < done:
        raise ConfigError(f"the checkpoint in {str(out_dir)!r} holds {done} epochs; "
                          f"epochs={config.epochs} asks for fewer (give epochs >= {done})")
    if saved is None:  # a checkpoint from before the settings were kept in it
        return
    now = config.as_dict()
    changed = [f"{key} ({saved[key]!r} -> {now.get(key)!r})" for key in saved
               if key not in RESUMABLE_TRAINING and saved[key] != now.get(key)]
    if changed:
        raise ConfigError(f"resume continues the run in {str(out_dir)!r} as it was made, but "
                          f"these training settings differ from its checkpoint: "
                          f"{'; '.join(changed)}; only {', '.join(RESUMABLE_TRAINING)} may "
                          "change (start again without resume, or in another out_dir)")


def _warn_if_threads_changed(saved: int | None) -> None:
    """A resumed run matches an uninterrupted one bit for bit at the thread count the run
    was made with (reductions add in another order with more threads): say so otherwise."""
    if saved is not None and int(saved) != torch.get_num_threads():
        warnings.warn(f"resuming with {torch.get_num_threads()} torch CPU thread(s), the run "
                      f"was made with {int(saved)}: the weights will not match an "
                      f"uninterrupted run bit for bit (neuroeq run --threads {int(saved)} "
                      "would)", RuntimeWarning, stacklevel=3)


def _train_epoch(network: Network, rule: GradientEstimator, optimizer: torch.optim.Optimizer,
                 x_all: torch.Tensor, y_all: torch.Tensor, particles: torch.Tensor | None,
                 config: TrainConfig, epoch: int, progress: bool) -> dict:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(y_all), generator=generator).to(y_all.device)
    total_loss, correct, seen, skipped, unsettled, diverged = 0.0, 0, 0, 0, 0, 0
    started = time.perf_counter()
    batches = range(0, len(order), config.batch_size)
    bar = progress_bar(batches, f"epoch {epoch}/{config.epochs}", progress)
    for start in bar:
        index = order[start:start + config.batch_size]
        x, y = x_all[index], y_all[index]
        init = particles[index] if particles is not None else None
        try:
            estimate = rule.estimate(network, (x, y), init=init)
        except RelaxationError:  # diverged (NaN, inf): no state to learn from, whatever the
            if config.on_nonconvergence == "stop":  # policy: counted unsettled and skipped
                raise
            unsettled += 1
            skipped += 1
            diverged += 1
            optimizer.zero_grad(set_to_none=True)
            continue
        phases = [estimate.free, *estimate.nudged.values()]
        failures = [phase.failure for phase in phases
                    if phase is not None and phase.failure is not None]
        failed = bool(failures)
        if failed:
            if config.on_nonconvergence == "stop":  # an engine told to only warn
                raise failures[0]
            unsettled += 1
            if config.on_nonconvergence == "skip":
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                continue
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if particles is not None:
            particles[index] = estimate.free.state.detach()
        with torch.no_grad():
            predicted = network.readout.predict(network.output_rates(estimate.free.state))
        correct += int((predicted == y).sum())
        total_loss += estimate.loss * len(y)
        seen += len(y)
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                        samples_s=f"{seen / elapsed:.0f}", refresh=False)
    seconds = time.perf_counter() - started
    if diverged and diverged == len(batches):  # nothing left to learn from, in any epoch
        _check_finite_parameters(network, epoch)  # (the more precise reason, if it is one)
        raise TrainingError(f"every batch of epoch {epoch} diverged (NaN or inf states): the "
                            "network cannot learn on; lower training.lr, the weight gain or "
                            "the input scale")
    if not seen:  # every batch skipped: no loss or accuracy was measured
        warnings.warn(f"epoch {epoch}: all {skipped} batches were skipped (the phases did not "
                      "settle); its train loss and accuracy are NaN", RuntimeWarning,
                      stacklevel=4)
    nan = float("nan")  # plain Python numbers: the checkpoint keeps the rows
    return {"epoch": epoch, "train_loss": float(total_loss / seen) if seen else nan,
            "train_accuracy": correct / seen if seen else nan,
            "samples_per_second": seen / seconds,
            "epoch_seconds": seconds, "skipped_batches": skipped,
            "unsettled_batches": unsettled}
