"""What each kind of protocol runs and writes into its result folder (``train``,
``gradcheck``, ``asymmetry``, ``stochastic``, ``snn_bptt``): :data:`RUNNERS`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from neuroeq.engines.langevin import check_gibbs_model
from neuroeq.errors import ConfigError
from neuroeq.io import software_attrs, utf8_data, write_file, write_netcdf, write_text
from neuroeq.protocols import build
from neuroeq.protocols.loader import Protocol

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuroeq.neuron_model import NeuronModel


def _attrs(protocol: Protocol, **extra: Any) -> dict[str, Any]:
    return {"protocol": protocol.name, "kind": protocol.kind,
            "config": json.dumps(utf8_data(protocol.config), default=str), **software_attrs(),
            **extra}


def _log_inexact(log: logging.Logger, models: list[NeuronModel | str], couplings: list[str],
                 rules: list[str]) -> None:
    """Log, once each, why a rule of the run is not exact on a coupling of the run (it runs
    there as an approximate baseline; each estimate warns too)."""
    from neuroeq.neuron_model import load_model
    from neuroeq.rules import rule_for_model

    for model in models:
        loaded = model if not isinstance(model, str) else load_model(model)
        for coupling in couplings:
            for name in rules:
                note = rule_for_model(name, loaded.structural_class).inexact_note(
                    coupling, loaded.name)
                if note is not None:
                    log.warning("%s", note)


def _save_figure(figure: Figure, path: Path, dpi: int) -> None:
    """Write ``figure`` as the PNG file ``path``, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        write_file(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi,
                                                       bbox_inches="tight"))
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------- train
def _run_train(protocol: Protocol, out: Path, log: logging.Logger, *, resume: bool,
               progress: bool) -> None:
    from neuroeq.analysis import (
        plot_convergence,
        plot_learning_curves,
        plot_phase_portrait,
        plot_plasticity_map,
        record_relaxation,
        weight_changes,
    )
    from neuroeq.training import train

    config = protocol.config
    torch.manual_seed(config["training"]["seed"])
    model = build.build_model(config)
    train_data, test_data = build.build_data(config)
    network = build.build_network(config, model, n_classes=train_data.n_classes)
    if network.sizes[0] != train_data.n_features:
        raise ConfigError(f"[network].sizes starts with {network.sizes[0]} inputs but data set "
                          f"{train_data.name!r} has {train_data.n_features} features")
    engine = build.build_engine(config)
    rule = build.build_rule(config, model, engine)
    if rule.samples_gibbs:
        check_gibbs_model(network)  # before any work, not at the first batch
    train_config = build.build_train_config(config)
    initial = {k: v.detach().clone() for k, v in network.dynamics_parameters().items()}
    log.info("network %s; rule %s; %d training / %d test samples", network.describe(),
             rule.describe(), len(train_data), len(test_data))
    if (note := rule.inexact_note(network.coupling, model.name)) is not None:
        log.warning("%s", note)

    def report(row: dict) -> None:
        log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | "
                 "%.0f samples/s | %d unsettled, %d skipped batches", row["epoch"],
                 row["train_loss"], row["train_accuracy"], row["test_loss"],
                 row["test_accuracy"], row["samples_per_second"], row["unsettled_batches"],
                 row["skipped_batches"])
        if progress:
            print(f"epoch {row['epoch']}: test accuracy {100 * row['test_accuracy']:.2f} %, "
                  f"train loss {row['train_loss']:.4f}, {row['samples_per_second']:.0f} "
                  "samples/s", file=sys.stderr)

    # the protocol's attributes in every metrics.nc the trainer writes (a run that stops
    # early leaves one too)
    metrics = train(network, rule, train_data, test_data, train_config, out_dir=out,
                    resume=resume, progress=progress, on_epoch=report,
                    attrs=_attrs(protocol))
    write_netcdf(metrics, out / "metrics.nc")  # (a resume with nothing left to train adds
    # the final epoch's evaluation, which the trainer returns without writing)
    if resume:  # the weights before training are those of a fresh network with this seed
        initial = {k: v.detach().clone() for k, v in
                   build.build_network(config, model).dynamics_parameters().items()}
    changes = weight_changes(initial, network.dynamics_parameters())
    changes.attrs.update(_attrs(protocol))
    write_netcdf(changes, out / "weight_changes.nc")
    outputs = config["outputs"]
    traces = None
    if outputs["state_samples"] > 0 and config["engine"]["name"] == "spiking":
        log.info("no states.nc: relaxation traces are recorded by the mean-field engines "
                 "(the spiking engine keeps window statistics only)")
    elif outputs["state_samples"] > 0:
        n = min(outputs["state_samples"], len(test_data))
        traces = record_relaxation(
            network, engine, test_data.x[:n], test_data.y[:n], config["rule"]["beta"],
            chunk=outputs["trace_chunk"], nudged_steps=config["engine"]["nudged_steps"])
        traces.attrs.update(_attrs(protocol))
        write_netcdf(traces, out / "states.nc")
    final = float(metrics.test_accuracy.dropna("epoch")[-1])
    log.info("final test accuracy %.4f", final)
    if outputs["figures"]:
        dpi = outputs["dpi"]
        _save_figure(plot_learning_curves(metrics), out / "figures" / "learning_curves.png", dpi)
        _save_figure(plot_plasticity_map(changes, "W1"), out / "figures" / "plasticity_W1.png",
                     dpi)
        if traces is not None:
            _save_figure(plot_convergence(traces), out / "figures" / "convergence.png", dpi)
            if len(model.state_variables) >= 2:
                _save_figure(plot_phase_portrait(traces, parameters=dict(model.parameters)),
                             out / "figures" / "phase_portrait.png", dpi)
        _save_figure(_overview(metrics, changes, traces, model), out / "figures" /
                     "overview.png", dpi)


def _overview(metrics: xr.Dataset, changes: xr.Dataset, traces: xr.Dataset | None,
              model: NeuronModel) -> Figure:
    """One picture of the run: accuracy, a phase portrait (or convergence), ΔW."""
    import matplotlib.pyplot as plt

    from neuroeq.analysis import plot_convergence, plot_phase_portrait
    from neuroeq.analysis.learning import whole_epoch_ticks

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    whole_epoch_ticks(axes[0], metrics.epoch.values)
    test = metrics.test_accuracy.dropna("epoch")
    axes[0].plot(metrics.epoch, 100 * metrics.train_accuracy, "o-", label="train")
    axes[0].plot(test.epoch, 100 * test, "s-", label="test")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_title(f"{metrics.attrs.get('rule')} on {metrics.attrs.get('dataset')}: "
                      f"{100 * float(test[-1]):.1f} % test")
    axes[0].legend()
    if traces is not None and len(model.state_variables) >= 2:
        plot_phase_portrait(traces, parameters=dict(model.parameters), ax=axes[1])
    elif traces is not None:
        plot_convergence(traces, ax=axes[1])
    delta = changes["W1"].values
    limit = float(np.abs(delta).max()) or 1.0
    shown = axes[2].imshow(delta, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axes[2].set_title("ΔW1 (hidden × input)")
    axes[2].set_xlabel("input unit")
    axes[2].set_ylabel("hidden unit")
    figure.colorbar(shown, ax=axes[2])
    figure.suptitle(f"{model.name}: a {model.structural_class.replace('_', '-')} network "
                    "learning with local plasticity", fontsize=11)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- gradcheck
def _run_gradcheck(protocol: Protocol, out: Path, log: logging.Logger, *, resume: bool,
                   progress: bool) -> None:
    from neuroeq.analysis import plot_alignment
    from neuroeq.gradcheck import gradcheck, summary_table

    section = protocol.config["gradcheck"]
    _log_inexact(log, section["models"], section["couplings"], section["rules"])
    dataset = gradcheck(models=section["models"], sizes=section["sizes"],
                        couplings=section["couplings"], alphas=section["alphas"],
                        rules=section["rules"], betas=section["betas"], seeds=section["seeds"],
                        batch=section["batch"], dtype=section["dtype"],
                        readout=section["readout"], cost=section["cost"],
                        progress=lambda text: log.info("gradcheck %s", text))
    dataset.attrs.update(_attrs(protocol))
    write_netcdf(dataset, out / "gradcheck.nc")
    table = summary_table(dataset)
    write_text(out / "table.md", table)
    log.info("wrote gradcheck.nc and table.md")
    if progress:
        print(table)
    if protocol.config["outputs"]["figures"] and len(section["betas"]) > 1:
        for model in dataset.model.values:
            for coupling in dataset.coupling.values:
                figure = plot_alignment(dataset, x="beta", model=model, coupling=coupling,
                                        alpha=dataset.alpha.values[-1])
                figure.axes[0].set_title(f"{model}, {coupling}")
                _save_figure(figure, out / "figures" / f"alignment_{model}_{coupling}.png",
                             protocol.config["outputs"]["dpi"])


# --------------------------------------------------------------------------- asymmetry
def _run_asymmetry(protocol: Protocol, out: Path, log: logging.Logger, *, resume: bool,
                   progress: bool) -> None:
    """EP vs VF-EP vs AsymEP vs Dyadic EP as functions of the asymmetry α: gradient
    alignment on a small net, and (``train = true``) accuracy after training."""
    from neuroeq.analysis import plot_alignment
    from neuroeq.gradcheck import gradcheck
    from neuroeq.training import train

    config = protocol.config
    section = config["asymmetry"]
    model = build.build_model(config)
    alphas, rules, seeds = section["alphas"], section["rules"], section["seeds"]
    log.info("gradient alignment over alpha %s, rules %s", alphas, rules)
    _log_inexact(log, [model], ["asymmetric"], rules)
    checked = gradcheck(models=[model], sizes=section["gradcheck_sizes"],
                        couplings=["asymmetric"], alphas=alphas, rules=rules,
                        betas=[section["gradcheck_beta"]], seeds=seeds,
                        engine=None, progress=lambda text: log.info("gradcheck %s", text))
    data = {"cosine": checked.cosine.isel(model=0, coupling=0, beta=0).transpose(
                "alpha", "rule", "seed"),
            "rel_error": checked.rel_error.isel(model=0, coupling=0, beta=0).transpose(
                "alpha", "rule", "seed")}
    if section["train"]:
        train_data, test_data = build.build_data(config)
        accuracy = np.full((len(alphas), len(rules), len(seeds)), np.nan)
        train_config = build.build_train_config(config)
        for i, alpha in enumerate(alphas):
            for j, rule_name in enumerate(rules):
                for k, seed in enumerate(seeds):
                    network = build.build_network(config, model, coupling="asymmetric",
                                                  alpha=alpha, seed=seed,
                                                  n_classes=train_data.n_classes)
                    rule = build.build_rule(config, model, name=rule_name)
                    metrics = train(network, rule, train_data, test_data, train_config,
                                    progress=False)
                    accuracy[i, j, k] = float(metrics.test_accuracy.dropna("epoch")[-1])
                    log.info("alpha %g rule %s seed %d: test accuracy %.4f", alpha, rule_name,
                             seed, accuracy[i, j, k])
        data["test_accuracy"] = (("alpha", "rule", "seed"), accuracy)
    dataset = xr.Dataset(data, coords={"alpha": alphas, "rule": rules, "seed": seeds},
                         attrs=_attrs(protocol, model=model.name,
                                      title="asymmetry sweep: gradient alignment and accuracy"))
    dataset = dataset.drop_vars([c for c in dataset.coords if c not in dataset.dims])
    write_netcdf(dataset, out / "asymmetry.nc")
    summary = dataset.mean("seed").to_dataframe().round(4).to_string()
    write_text(out / "summary.txt", summary + "\n")
    if progress:
        print(summary)
    if config["outputs"]["figures"]:
        import matplotlib.pyplot as plt

        panels = 2 if "test_accuracy" in dataset else 1
        figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
        plot_alignment(dataset, x="alpha", variable="cosine", ax=axes[0, 0])
        if panels == 2:
            plot_alignment(dataset.assign(accuracy=100 * dataset.test_accuracy), x="alpha",
                           variable="accuracy", ax=axes[0, 1])
            axes[0, 1].set_ylabel("test accuracy (%)")
            axes[0, 1].set_title("accuracy after training")
        figure.tight_layout()
        _save_figure(figure, out / "figures" / "asymmetry.png", config["outputs"]["dpi"])


# --------------------------------------------------------------------------- stochastic
def _run_stochastic(protocol: Protocol, out: Path, log: logging.Logger, *, resume: bool,
                    progress: bool) -> None:
    """Stochastic EP on the Brian2 spiking engine against mean-field EP (torch): bias,
    variance and alignment as functions of the window and the population size."""
    from neuroeq.analysis.stochastic import plot_stochastic, stochastic_vs_mean_field

    config = protocol.config
    section = config["stochastic"]
    model = build.build_model(config)
    if not model.spiking:
        raise ConfigError(f"[model].name {model.name!r} has no [spiking] table; the stochastic "
                          "protocol needs a spiking model such as spiking_rate")
    network = build.build_network(config, model, sizes=section["sizes"], dtype="float64",
                                  readout="identity", cost="mse")
    generator = torch.Generator().manual_seed(section["seed"])
    x = torch.rand(section["batch"], section["sizes"][0], generator=generator,
                   dtype=torch.float64)
    y = torch.randint(0, section["sizes"][-1], (section["batch"],), generator=generator)
    seeds = range(section["seed"], section["seed"] + section["repeats"])
    log.info("stochastic EP vs mean-field EP: windows %s, replicas %s, %d seeds",
             section["windows"], section["replicas"], section["repeats"])
    dataset = stochastic_vs_mean_field(network, x, y, beta=section["beta"],
                                       windows=section["windows"],
                                       replicas=section["replicas"], seeds=seeds,
                                       centered=section["centered"], target=section["target"])
    dataset.attrs.update(_attrs(protocol))
    write_netcdf(dataset, out / "stochastic.nc")
    summary = dataset[["bias", "variance", "rmse"]].to_dataframe()
    summary["cosine_mean"] = dataset.cosine.mean("seed").to_series()
    text = (summary.round(5).to_string() + f"\nslope of rmse vs window (R = "
            f"{section['replicas'][0]}): {dataset.attrs['slope_window_1']:.3f}\n")
    write_text(out / "summary.txt", text)
    log.info("summary:\n%s", text)
    if progress:
        print(text)
    if config["outputs"]["figures"]:
        _save_figure(plot_stochastic(dataset), out / "figures" / "stochastic_vs_mean_field.png",
                     config["outputs"]["dpi"])


# --------------------------------------------------------------------------- snn_bptt
def _run_snn_bptt(protocol: Protocol, out: Path, log: logging.Logger, *, resume: bool,
                  progress: bool) -> None:
    """The snntorch baseline (Leaky neurons, rate-coded input, BPTT + surrogate gradient)
    on the same architecture and data as an EP protocol."""
    from neuroeq.analysis import plot_learning_curves
    from neuroeq.baselines import train_snn_bptt

    config = protocol.config
    training, snn = config["training"], config["snn"]
    if not isinstance(training["lr"], float):
        raise ConfigError("[training].lr must be one number for the snntorch baseline")
    train_data, test_data = build.build_data(config)

    def report(row: dict) -> None:
        log.info("epoch %d: train loss %.4f acc %.4f | test acc %.4f | %.0f samples/s | "
                 "peak RSS %.0f MB", row["epoch"], row["train_loss"], row["train_accuracy"],
                 row["test_accuracy"], row["samples_per_second"], row["peak_rss_mb"])
        if progress:
            print(f"epoch {row['epoch']}: test accuracy {100 * row['test_accuracy']:.2f} %",
                  file=sys.stderr)

    metrics = train_snn_bptt(train_data, test_data, config["network"]["sizes"],
                             epochs=training["epochs"], batch_size=training["batch_size"],
                             lr=training["lr"], num_steps=snn["num_steps"],
                             beta=snn["membrane_beta"], seed=training["seed"],
                             progress=progress, on_epoch=report)
    metrics.attrs.update(_attrs(protocol))
    write_netcdf(metrics, out / "metrics.nc")
    if config["outputs"]["figures"]:
        _save_figure(plot_learning_curves(metrics), out / "figures" / "learning_curves.png",
                     config["outputs"]["dpi"])


RUNNERS: dict[str, Callable[..., None]] = {
    "train": _run_train, "gradcheck": _run_gradcheck, "asymmetry": _run_asymmetry,
    "stochastic": _run_stochastic, "snn_bptt": _run_snn_bptt,
}
