"""Running a protocol: config in, result folder out.

Every run writes ``protocol.toml`` (the resolved configuration), ``log.txt``, its datasets
(NetCDF) and figures (PNG) into one folder. An existing folder is refused unless
``force`` (start again) or ``resume`` (training continues from its checkpoint) is given.
``force`` keeps the folder it replaces beside the new one (``NAME.previous``) until the new
run is done: a run that fails leaves the results it was to replace where they can be found.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import whole_number
from neuroeq.engines.langevin import check_gibbs_model
from neuroeq.errors import ConfigError
from neuroeq.io import software_attrs, write_netcdf, write_text
from neuroeq.protocols import build
from neuroeq.protocols.folder_lock import LOCK_FILE, folder_lock, is_locked
from neuroeq.protocols.loader import Protocol, load_protocol
from neuroeq.protocols.schema import GIBBS_RULES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuroeq.neuron_model import NeuronModel

RESULT_FILES = ("protocol.toml", "log.txt", LOCK_FILE)
#: the first line of the ``protocol.toml`` a run writes (then the file it was resolved from)
PROTOCOL_HEADER = "# resolved from "
#: settings a resumed run may change (and every key of [outputs]): how long it trains, and
#: what does not change what it learns (where the data files lie, how often it checkpoints)
RESUMABLE_CHANGES = {("training", "epochs"), ("training", "checkpoint_every"),
                     ("training", "eval_batch_size"), ("data", "root"),
                     ("protocol", "description")}
DONE_MARKER = "DONE"
MAX_THREADS_PER_CORE = 4
PREVIOUS_SUFFIX = ".previous"


def default_output_dir(protocol: Protocol) -> Path:
    return Path("results") / protocol.name


def run_protocol(protocol: Protocol, out_dir: str | Path | None = None, *, force: bool = False,
                 resume: bool = False, progress: bool = True, threads: int | None = None
                 ) -> Path:
    """Run ``protocol`` and return its result folder (see the module docstring).

    ``threads``: torch's intra-op CPU threads for the run (restored afterwards; ``None``
    keeps the process's setting). The count is logged and written into every dataset
    (``torch_threads``): results are bit-for-bit reproducible at one count, not across
    counts (parallel reductions add in another order)."""
    if force and resume:
        raise ConfigError("force (start again) and resume (continue) exclude each other")
    threads = None if threads is None else whole_number(threads, "threads", 1)
    if threads is not None and threads > MAX_THREADS_PER_CORE * (os.cpu_count() or 1):
        raise ConfigError(f"{threads} torch threads on {os.cpu_count()} cores: at most "
                          f"{MAX_THREADS_PER_CORE} per core (one per core is fastest)")
    out = Path(out_dir) if out_dir is not None else default_output_dir(protocol)
    if resume and protocol.kind != "train":
        raise ConfigError(f"--resume applies to training protocols, not kind "
                          f"{protocol.kind!r} (use --force to run again)")
    _check_output_folder(out)
    if resume and not _holds_results(out):
        raise ConfigError(f"nothing to resume in {str(out)!r}: it holds no training run; run "
                          "without --resume to start one")
    if _holds_results(out):
        if not (force or resume):
            raise ConfigError(f"result folder {str(out)!r} exists; pass --force to replace it "
                              "or --resume to continue a training run")
        if resume:
            _check_resumable(protocol, out)
    previous = _set_aside(out) if force else None
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        _run_in(protocol, out, previous, resume=resume, progress=progress, threads=threads)
    if previous is not None:
        shutil.rmtree(previous)
    return out


def _run_in(protocol: Protocol, out: Path, previous: Path | None, *, resume: bool,
            progress: bool, threads: int | None) -> None:
    """The run itself, in the folder ``out`` this process holds: the resolved protocol and
    the log first, the results, then the done marker."""
    (out / DONE_MARKER).unlink(missing_ok=True)
    write_text(out / "protocol.toml", f"{PROTOCOL_HEADER}{protocol.source}\n"
                                      + protocol.to_toml())
    log = _logger(out)
    log.info("protocol %s (kind %s) from %s", protocol.name, protocol.kind, protocol.source)
    threads_before = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
            if threads > (os.cpu_count() or threads):
                message = (f"{threads} torch threads on {os.cpu_count()} cores: threads "
                           "that wait for each other slow a relaxation's small products down")
                log.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.info("%s", _environment())
        RUNNERS[protocol.kind](protocol, out, log, resume=resume, progress=progress)
    except Exception as exc:
        log.error("failed: %s: %s", type(exc).__name__, exc)
        if previous is not None:
            kept = f"the results this run was to replace are kept in {str(previous)!r}"
            log.error(kept)
            exc.add_note(kept)
        raise
    finally:
        torch.set_num_threads(threads_before)
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
    seconds = time.perf_counter() - started
    write_text(out / DONE_MARKER, f"{seconds:.1f} s\n")
    with open(out / "log.txt", "a") as handle:
        handle.write(f"done in {seconds:.1f} s\n")


def seconds_taken(out: Path) -> float:
    """How long the finished run in ``out`` took, from its done marker; NaN if unknown."""
    try:
        return float((out / DONE_MARKER).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _holds_results(out: Path) -> bool:
    """Whether ``out`` holds anything but a run's own log and protocol (a run that failed
    before writing a result leaves only those, and a new run may take the folder)."""
    return out.is_dir() and any(entry.name not in RESULT_FILES for entry in out.iterdir())


def _check_output_folder(out: Path) -> None:
    """Refuse an ``out`` that is a file, a folder another run is writing to, or a folder of
    files no run wrote (which ``force`` would delete): a run folder starts with the
    ``protocol.toml`` it wrote."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the result folder {str(out)!r} is a file; give --out a folder")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"cannot make the result folder {str(out)!r}: {str(parent)!r} is a "
                          "file, not a folder")
    if is_locked(out):
        raise ConfigError(f"another run is writing to {str(out)!r}; wait for it to finish, "
                          "or give --out another folder")
    entries = sorted(e.name for e in out.iterdir() if e.name != LOCK_FILE) \
        if out.is_dir() else []
    if entries and not _written_by_a_run(out):
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(f"{str(out)!r} holds files that no neuroeq run wrote ({shown}); a "
                          "run writes into a new folder or into its own result folder "
                          "(--force replaces that, --resume continues it), so give --out a "
                          "new folder")


def _written_by_a_run(out: Path) -> bool:
    """Whether ``out`` starts with the ``protocol.toml`` of a run (:data:`PROTOCOL_HEADER`)."""
    try:
        with open(out / "protocol.toml", encoding="utf-8") as handle:
            return handle.readline().startswith(PROTOCOL_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _set_aside(out: Path) -> Path | None:
    """Move what ``out`` holds to ``NAME.previous`` for a ``force`` run, which removes it
    once the new run is done; ``None`` when there is nothing to keep (a folder with only a
    failed attempt's log and protocol is removed). A folder without the
    done marker beside a kept one is a failed attempt at replacing it: it is removed, and
    the kept results stay (until a run is done)."""
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise ConfigError(f"--force would replace {str(out)!r}, which holds the current "
                          "directory; give --out a folder of its own")
    previous = out.with_name(out.name + PREVIOUS_SUFFIX)
    if not _holds_results(out):  # nothing, or a failed attempt's log and protocol only
        if out.is_dir():
            shutil.rmtree(out)
        return previous if previous.exists() else None
    if previous.exists():
        if not (out / DONE_MARKER).exists():
            shutil.rmtree(out)
            return previous
        shutil.rmtree(previous)
    out.rename(previous)
    return previous


def _check_resumable(protocol: Protocol, out: Path) -> None:
    """``--resume`` continues the run in ``out`` as it was made: the protocol may differ
    from the folder's ``protocol.toml`` only in :data:`RESUMABLE_CHANGES` and
    ``[outputs]``; anything else would leave a folder whose protocol does not describe its
    results. The checkpoint's own checks (:func:`neuroeq.training.check_resumable`) run
    here too, before the folder is touched."""
    saved_path = out / "protocol.toml"
    if not saved_path.is_file():
        return
    changed = changed_settings(load_protocol(saved_path).config, protocol.config,
                               ignore=RESUMABLE_CHANGES | {("outputs", None)})
    if changed:
        raise ConfigError(f"--resume continues the run in {str(out)!r} as it was made, but "
                          f"these settings differ from its protocol.toml: "
                          f"{'; '.join(changed)}. Only [outputs] and "
                          f"{', '.join(f'{a}.{b}' for a, b in sorted(RESUMABLE_CHANGES))} may "
                          "change; use --force to start again, or another --out")
    from neuroeq.training import CHECKPOINT_NAME, check_resumable, load_checkpoint

    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.is_file():  # e.g. fewer epochs than it holds: refused before any write
        check_resumable(load_checkpoint(checkpoint), build.build_train_config(protocol.config),
                        out)


def changed_settings(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]],
                     ignore: set[tuple[str, str | None]] = frozenset()) -> list[str]:
    """``section.key (old -> new)`` for every setting that differs between two resolved
    protocols; ``ignore`` holds ``(section, key)`` pairs, ``(section, None)`` a whole one."""
    changed = []
    for section in sorted(set(before) | set(now)):
        if (section, None) in ignore:
            continue
        old, new = before.get(section, {}), now.get(section, {})
        for key in sorted(set(old) | set(new)):
            if (section, key) not in ignore and old.get(key) != new.get(key):
                changed.append(f"{section}.{key} ({old.get(key)!r} -> {new.get(key)!r})")
    return changed


def _logger(out: Path) -> logging.Logger:
    """A logger writing to ``out/log.txt``, of this run alone: not registered with
    ``logging`` (a sweep would otherwise keep one logger per point for good)."""
    log = logging.Logger(f"neuroeq.run.{out.resolve()}", logging.INFO)
    handler = logging.FileHandler(out / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _environment() -> str:
    """One log line: what the numbers of this run depend on beyond its protocol."""
    from neuroeq import __version__

    return (f"neuroeq {__version__}, torch {torch.__version__} with "
            f"{torch.get_num_threads()} CPU thread(s), Python {platform.python_version()}, "
            f"{platform.machine()} ({os.cpu_count()} cores)")


def _attrs(protocol: Protocol, **extra: Any) -> dict[str, Any]:
    return {"protocol": protocol.name, "kind": protocol.kind,
            "config": json.dumps(protocol.config, default=str), **software_attrs(), **extra}


def _save_figure(figure: Figure, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=dpi, bbox_inches="tight")
    temporary.replace(path)
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
    if config["rule"]["name"] in GIBBS_RULES:
        check_gibbs_model(network)  # before any work, not at the first batch
    train_config = build.build_train_config(config)
    initial = {k: v.detach().clone() for k, v in network.dynamics_parameters().items()}
    log.info("network %s; rule %s; %d training / %d test samples", network.describe(),
             rule.describe(), len(train_data), len(test_data))

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

    metrics = train(network, rule, train_data, test_data, train_config, out_dir=out,
                    resume=resume, progress=progress, on_epoch=report)
    metrics.attrs.update(_attrs(protocol))
    write_netcdf(metrics, out / "metrics.nc")
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
    checked = gradcheck(models=[config["model"]["name"]], sizes=section["gradcheck_sizes"],
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
