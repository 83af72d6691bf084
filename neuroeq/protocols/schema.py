"""The protocol schema: which sections and keys a protocol file may hold, their types,
defaults and allowed values. Validation errors name the key (``[rule].beta``) and say what
would be right. Protocol files are data: nothing in them is ever executed.
"""

from __future__ import annotations

import datetime
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuroeq.checks import did_you_mean, folder_name
from neuroeq.data import DATASETS
from neuroeq.engines.brian2_common import TARGETS
from neuroeq.engines.settings import DTYPES
from neuroeq.engines.torch_engine import SOLVERS
from neuroeq.errors import ConfigError, ModelError
from neuroeq.gradcheck import DEFAULT_RULES, MAX_BATCH, check_alphas
from neuroeq.gradcheck import MAX_UNITS as GRADCHECK_MAX_UNITS
from neuroeq.network import COUPLINGS, DEFAULT_ALPHA
from neuroeq.neuron_model import find_model_file
from neuroeq.readout import COSTS, READOUT_KINDS
from neuroeq.rules import RULES, rule_option_defaults, rules_with_option
from neuroeq.seeds import MAX_SEED
from neuroeq.training.config import NONCONVERGENCE_POLICIES, OPTIMIZERS

REQUIRED = object()
KINDS = ("train", "gradcheck", "asymmetry", "stochastic", "snn_bptt")
#: the largest layer a protocol may ask for (a typo such as 5000000 fails early)
MAX_UNITS = 100_000
MAX_SYNAPSES = 200_000_000


@dataclass(frozen=True)
class Field:
    """One key: its type (``int``, ``float``, ``bool``, ``str``, ``list[int]``,
    ``list[float]``, ``list[str]``, ``table``, ``lr`` or ``optional_*``), default, the
    allowed values and bounds."""

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()
    minimum: float | None = None
    positive: bool = False
    maximum: float | None = None
    doc: str = ""
    #: what ``None`` means, for the docs (default: the model file's value)
    default_doc: str = "model file"


#: the rule lists of the rules' own attributes (neuroeq.rules.RULES): the noisy-network
#: rules (Langevin sampling of the Gibbs distribution, 0 < beta <= 1), the rule that needs
#: the spiking engine, and those the Brian2 engine runs
GIBBS_RULES = tuple(name for name, rule in RULES.items() if rule.samples_gibbs)
SPIKING_RULES = tuple(name for name, rule in RULES.items() if rule.uses_spike_statistics)
BRIAN2_RULES = tuple(name for name, rule in RULES.items() if rule.runs_on_brian2)
#: rules a gradient check or an asymmetry protocol may name (the Gibbs rules have their own
#: check, stochastic EP its own protocol kind), and those a training protocol may name
RULE_CHOICES = tuple(name for name in RULES if name not in GIBBS_RULES + SPIKING_RULES)
CHECKED_ELSEWHERE_DOC = (f"{', '.join(GIBBS_RULES)}: `neuroeq gibbscheck`; "
                         f"{', '.join(SPIKING_RULES)}: kind stochastic")
TRAIN_RULE_CHOICES = tuple(RULES)
ENGINES = ("torch", "brian2", "spiking")
MAX_STEPS = 10_000_000

#: ``[rule]`` keys that only some rules read, and the rule constructors' option each sets
#: (``dt_ms`` is converted to seconds)
RULE_KEYS: dict[str, str] = {
    "random_sign": "random_sign", "temperature": "temperature", "chains": "chains",
    "groups": "groups", "burn_in": "burn_in", "samples": "samples", "thin": "thin",
    "dt_ms": "dt", "metropolis": "metropolis", "points": "points", "centered": "centered",
}
#: the rules that read each of those keys (those whose constructor takes the option)
RULE_OPTIONS: dict[str, tuple[str, ...]] = {
    key: rules_with_option(option) for key, option in RULE_KEYS.items()}


def _rule_option(kind: str, key: str, doc: str, default_doc: str | None = None,
                 **bounds: Any) -> Field:
    """A ``[rule]`` key read by the rules that take its option only (``None``: the rule's own
    default, read off its constructor unless ``default_doc`` says it)."""
    rules, option = RULE_OPTIONS[key], RULE_KEYS[key]
    if default_doc is None:
        defaults = {name: _toml_text(rule_option_defaults(name)[option]) for name in rules}
        default_doc = (next(iter(defaults.values())) if len(set(defaults.values())) == 1
                       else ", ".join(f"{value} ({name})" for name, value in defaults.items()))
    return Field(kind, None, doc=f"{', '.join(rules)}: {doc}", default_doc=f"rule: {default_doc}",
                 **bounds)


def _toml_text(value: Any) -> str:
    """A default as a protocol file writes it (``true``, not ``True``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


#: ``[engine]`` keys that only some engines read
ENGINE_OPTIONS: dict[str, tuple[str, ...]] = {
    "free_steps": ("torch", "brian2"), "nudged_steps": ("torch", "brian2"),
    "tol": ("torch", "brian2"), "burn_in": ("spiking",), "window": ("spiking",),
    "replicas": ("spiking",), "check_every": ("torch", "brian2"), "nudge_every": ("brian2",),
    "anderson_memory": ("torch",), "anderson_mixing": ("torch",),
    "over_relaxation": ("torch",),
}
#: ``[engine]`` keys that only one solver of the torch engine reads
SOLVER_OPTIONS: dict[str, str] = {"anderson_memory": "anderson", "anderson_mixing": "anderson",
                                  "over_relaxation": "gauss_seidel"}

#: a gradient check's limit (its oracle solves with the dense Jacobian of the state)
GRADCHECK_SIZES_DOC = f"at most {GRADCHECK_MAX_UNITS:,} units beyond the input"

SCHEMA: dict[str, dict[str, Field]] = {
    "protocol": {
        "name": Field("str", doc="names the result folder"),
        "kind": Field("str", choices=KINDS, doc="what to run"),
        "description": Field("str", ""),
    },
    "model": {
        "name": Field("str", doc="a model in models/ (or a path to a model file, relative "
                      "to the current directory)"),
        "parameters": Field("table", {}, doc="parameter overrides in SI units (seconds, "
                                              "not the file's ms), e.g. {a = 0.0}"),
    },
    "network": {
        "sizes": Field("list[int]", [64, 32, 10], positive=True, maximum=MAX_UNITS),
        "coupling": Field("str", "symmetric", choices=COUPLINGS),
        # (None: no alpha, as a resolved protocol of another coupling holds it)
        "alpha": Field("optional_float", DEFAULT_ALPHA, minimum=0.0, maximum=1.0,
                       doc="coupling asymmetric only: the asymmetry of the initial backward "
                           "weights, B = (1-α)Wᵀ + αR (another coupling refuses a value other "
                           "than 1.0, and has none)"),
        "lateral": Field("bool", False),
        "skip": Field("bool", False),
        "gain": Field("float", 1.0, positive=True),
        "bias_init": Field("float", 0.0),
        "readout": Field("str", "identity", choices=READOUT_KINDS),
        "cost": Field("str", "mse", choices=COSTS),
        "dtype": Field("str", "float32", choices=tuple(DTYPES)),
        "seed": Field("int", 0, minimum=0, maximum=MAX_SEED),
    },
    "engine": {
        "name": Field("str", "torch", choices=ENGINES,
                      doc=f"brian2 runs rules {', '.join(BRIAN2_RULES)}; spiking: the Brian2 "
                          f"Bernoulli spiking network (rule {', '.join(SPIKING_RULES)})"),
        "dt_ms": Field("optional_float", None, positive=True,
                       doc="Euler step (ms); spiking: one Bernoulli draw per step"),
        "free_steps": Field("optional_int", None, positive=True, doc="free-phase step budget"),
        "nudged_steps": Field("optional_int", None, positive=True,
                              doc="nudged-phase step budget"),
        "tol": Field("optional_float", None, minimum=0.0,
                     doc="stop at max|ds/dt|·τ < tol; 0 runs the whole budget"),
        "check_every": Field("optional_int", None, positive=True, maximum=MAX_STEPS,
                             doc="steps between convergence checks (brian2: steps per run() "
                                 "call)", default_doc="10 (torch), 100 (brian2)"),
        "nudge_every": Field("optional_int", None, positive=True, maximum=MAX_STEPS,
                             doc="brian2: steps between refreshes of the readout's nudging "
                                 "force inside the simulation", default_doc="1"),
        "solver": Field("str", "euler", choices=SOLVERS,
                        doc="fixed-point solver of the torch engine (gauss_seidel: layer "
                            "sweeps)"),
        "anderson_memory": Field("optional_int", None, positive=True, maximum=1000,
                                 doc="torch, solver anderson: past residuals mixed",
                                 default_doc="10"),
        "anderson_mixing": Field("optional_float", None, positive=True,
                                 doc="torch, solver anderson: mixing ω (Anderson "
                                     "extrapolates s + ω·(G(s) - s))", default_doc="1.0"),
        "over_relaxation": Field("optional_float", None, positive=True,
                                 doc="torch, solver gauss_seidel: the sweep's Euler steps "
                                     "are ω·dt", default_doc="1.0"),
        "target": Field("str", "cython", choices=TARGETS,
                        doc="Brian2 target (brian2, spiking)"),
        "burn_in": Field("optional_int", None, minimum=0, maximum=MAX_STEPS,
                         doc="spiking: steps before the statistics are accumulated"),
        "window": Field("optional_int", None, positive=True, maximum=MAX_STEPS,
                        doc="spiking: steps over which the phase statistics are averaged"),
        "replicas": Field("optional_int", None, positive=True, maximum=10_000,
                          doc="spiking: independent copies of each sample",
                          default_doc="1"),
    },
    "rule": {
        "name": Field("str", choices=TRAIN_RULE_CHOICES),
        "beta": Field("float", 0.5, positive=True,
                      doc=f"{', '.join(GIBBS_RULES)}: at most 1"),
        "random_sign": _rule_option("optional_bool", "random_sign",
                                    "a random sign of β per batch"),
        "temperature": _rule_option("optional_float", "temperature",
                                    "temperature T of the Gibbs distribution", positive=True),
        "chains": _rule_option("optional_int", "chains",
                               "Langevin chains per sample (a multiple of groups)",
                               positive=True, maximum=100_000),
        "groups": _rule_option("optional_int", "groups",
                               "independent groups of chains (standard error)",
                               minimum=2, maximum=100_000),
        "burn_in": _rule_option("optional_int", "burn_in",
                                "Langevin steps before the first kept sample",
                                minimum=0, maximum=MAX_STEPS),
        "samples": _rule_option("optional_int", "samples", "samples kept per chain",
                                positive=True, maximum=MAX_STEPS),
        "thin": _rule_option("optional_int", "thin",
                             "Langevin steps between kept samples", positive=True,
                             maximum=MAX_STEPS),
        "dt_ms": _rule_option("optional_float", "dt_ms", "Langevin step (ms)", "τ/10",
                              positive=True),
        "metropolis": _rule_option("optional_bool", "metropolis",
                                   "MALA (exact Gibbs law) instead of Euler-Maruyama"),
        "points": _rule_option("optional_int", "points",
                               "Gauss-Legendre points of the integral over the nudge, or "
                               "complex nudges on the circle of radius r = β", positive=True,
                               maximum=1000),
        "centered": _rule_option("optional_bool", "centered",
                                 "phases ±β (else 0 and +β)"),
    },
    "data": {
        "name": Field("str", "digits", choices=DATASETS),
        "root": Field("optional_str", None, doc="IDX directory (else $NEUROEQ_DATA_DIR)",
                      default_doc="$NEUROEQ_DATA_DIR"),
    },
    "training": {
        "epochs": Field("int", 10, positive=True),
        "batch_size": Field("int", 64, positive=True),
        "optimizer": Field("str", "sgd", choices=OPTIMIZERS),
        "lr": Field("lr", 0.05, doc="one rate, or a table per parameter: "
                                    "{W1 = 0.1, readout = 0.01, default = 0.05}"),
        "lr_decay": Field("float", 1.0, positive=True, maximum=1.0,
                          doc="learning rates shrink by this factor every epoch"),
        "momentum": Field("float", 0.0, minimum=0.0),
        "weight_decay": Field("float", 0.0, minimum=0.0),
        "persistent_particles": Field("bool", False),
        "eval_every": Field("int", 1, positive=True),
        "eval_batch_size": Field("int", 1000, positive=True),
        "seed": Field("int", 0, minimum=0, maximum=MAX_SEED),
        "checkpoint_every": Field("int", 1, positive=True),
        "on_nonconvergence": Field("str", "continue", choices=NONCONVERGENCE_POLICIES),
        "limit_train": Field("optional_int", None, positive=True, doc="use the first N "
                             "training samples", default_doc="all samples"),
        "limit_test": Field("optional_int", None, positive=True, doc="use the first N test "
                            "samples", default_doc="all samples"),
    },
    "gradcheck": {
        "models": Field("list[str]", ["hopfield_smooth"],
                        doc="models in models/ (or paths to model files)"),
        "sizes": Field("list[int]", [20, 16, 5], positive=True, maximum=MAX_UNITS,
                       doc=GRADCHECK_SIZES_DOC),
        "couplings": Field("list[str]", ["symmetric"],
                           choices=COUPLINGS),
        "alphas": Field("list[float]", [DEFAULT_ALPHA], minimum=0.0, maximum=1.0,
                        doc="asymmetries of the asymmetric networks (others need "
                            "asymmetric among the couplings)"),
        "rules": Field("list[str]", list(DEFAULT_RULES), choices=RULE_CHOICES,
                       doc=CHECKED_ELSEWHERE_DOC),
        "betas": Field("list[float]", [1e-3], positive=True),
        "seeds": Field("list[int]", [0], minimum=0, maximum=MAX_SEED),
        "batch": Field("int", 4, positive=True, maximum=MAX_BATCH),
        "dtype": Field("str", "float64", choices=tuple(DTYPES)),
        "readout": Field("str", "identity", choices=READOUT_KINDS),
        "cost": Field("str", "mse", choices=COSTS),
    },
    "asymmetry": {
        "alphas": Field("list[float]", [0.0, 0.5, 1.0], minimum=0.0, maximum=1.0),
        "rules": Field("list[str]", ["ep", "vf", "asym", "dyadic"], choices=RULE_CHOICES,
                       doc=CHECKED_ELSEWHERE_DOC),
        "gradcheck_sizes": Field("list[int]", [20, 16, 5], positive=True, maximum=MAX_UNITS,
                                 doc=GRADCHECK_SIZES_DOC),
        "gradcheck_beta": Field("float", 1e-3, positive=True),
        "seeds": Field("list[int]", [0], minimum=0, maximum=MAX_SEED),
        "train": Field("bool", True, doc="also train each (alpha, rule) on the data set"),
    },
    "stochastic": {
        "sizes": Field("list[int]", [8, 6, 3], positive=True, maximum=MAX_UNITS),
        "windows": Field("list[int]", [250, 1000, 4000], positive=True, maximum=10_000_000,
                         doc="averaging windows (steps)"),
        "replicas": Field("list[int]", [1, 4], positive=True, maximum=10_000,
                          doc="population sizes (copies per sample)"),
        "batch": Field("int", 2, positive=True, maximum=10_000),
        "beta": Field("float", 0.2, positive=True),
        "centered": Field("bool", True),
        "repeats": Field("int", 4, positive=True, maximum=1000,
                         doc="independent seeds per point"),
        "seed": Field("int", 0, minimum=0, maximum=MAX_SEED),
        "target": Field("str", "cython", choices=TARGETS),
    },
    "snn": {
        "num_steps": Field("int", 25, positive=True, maximum=10_000,
                           doc="time steps of the rate-coded input"),
        "membrane_beta": Field("float", 0.9, positive=True, maximum=0.999,
                               doc="Leaky membrane decay per step"),
    },
    "outputs": {
        "figures": Field("bool", True),
        "state_samples": Field("int", 6, minimum=0, maximum=1000,
                               doc="train: test samples whose free/nudged trajectories are "
                                   "saved"),
        "trace_chunk": Field("int", 10, positive=True,
                             doc="train: steps between saved trace points (and each phase's "
                                 "last step)"),
        "dpi": Field("int", 110, positive=True, maximum=600),
    },
}

#: the sections each kind reads (others present in the file are an error)
SECTIONS_BY_KIND: dict[str, tuple[str, ...]] = {
    "train": ("protocol", "model", "network", "engine", "rule", "data", "training", "outputs"),
    "gradcheck": ("protocol", "gradcheck", "outputs"),
    "asymmetry": ("protocol", "model", "network", "engine", "data", "training", "asymmetry",
                  "outputs"),
    "stochastic": ("protocol", "model", "network", "stochastic", "outputs"),
    "snn_bptt": ("protocol", "network", "data", "training", "snn", "outputs"),
}
#: the ``[outputs]`` keys of the kinds that record no relaxation traces (only train saves
#: ``state_samples`` trajectories every ``trace_chunk`` steps)
FIGURE_OUTPUTS = ("figures", "dpi")
#: the keys of a section a kind reads, where it reads only some: the others are refused
#: unless they hold their default (a resolved protocol.toml of an earlier version wrote
#: every default) and are left out of the resolved protocol
KEYS_READ: dict[str, dict[str, tuple[str, ...]]] = {
    "gradcheck": {"outputs": FIGURE_OUTPUTS},
    # [stochastic] sets the sizes, and the comparison runs in float64 with an identity
    # readout and MSE
    "stochastic": {"network": ("coupling", "alpha", "lateral", "skip", "gain", "bias_init",
                               "seed"),
                   "outputs": FIGURE_OUTPUTS},
    # the snntorch baseline: Adam at one learning rate, seeded by [training].seed
    "snn_bptt": {"network": ("sizes",),
                 "training": ("epochs", "batch_size", "lr", "seed", "limit_train",
                              "limit_test"),
                 "outputs": FIGURE_OUTPUTS},
    # with train = true (else ASYMMETRY_UNTRAINED_KEYS_READ): [asymmetry] sets the networks'
    # coupling (asymmetric), alphas and seeds; training writes no checkpoints; its gradient
    # checks build their own networks
    "asymmetry": {"network": ("sizes", "lateral", "skip", "gain", "bias_init", "readout",
                              "cost", "dtype"),
                  "training": tuple(key for key in SCHEMA["training"]
                                    if key != "checkpoint_every"),
                  "outputs": FIGURE_OUTPUTS},
}
#: what an asymmetry protocol with train = false reads: its gradient checks run on torch,
#: in float64, on networks of [asymmetry].gradcheck_sizes of the model (with its
#: [model].parameters)
ASYMMETRY_UNTRAINED_KEYS_READ: dict[str, tuple[str, ...]] = {
    "model": ("name", "parameters"), "network": (), "engine": (), "data": (), "training": (),
    "outputs": FIGURE_OUTPUTS,
}
#: what to set instead of a key a kind does not read
UNREAD_HINTS: dict[tuple[str, str, str], str] = {
    ("asymmetry", "network", "coupling"): "its networks are asymmetric",
    ("asymmetry", "network", "alpha"): "set [asymmetry].alphas",
    ("asymmetry", "network", "seed"): "set [asymmetry].seeds",
}
#: sections a kind cannot do without (the rest fall back to defaults)
REQUIRED_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("protocol", "model", "rule"),
    "gradcheck": ("protocol",),
    "asymmetry": ("protocol", "model"),
    "stochastic": ("protocol", "model"),
    "snn_bptt": ("protocol",),
}


def validate(data: Mapping[str, Any], source: str = "protocol") -> dict[str, dict[str, Any]]:
    """Check ``data`` against :data:`SCHEMA` and return it with every default filled in."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a protocol is a table of sections")
    if "sweep" in data:
        raise ConfigError(f"{source} is a sweep file (it has a [sweep] table); run it with "
                          "neuroeq sweep")
    header = data.get("protocol")
    if not isinstance(header, Mapping):
        raise ConfigError(f"{source}: missing [protocol] section (with name and kind)")
    kind = header.get("kind")
    if kind is None:
        raise ConfigError(f"{source}: [protocol].kind is missing; give one of "
                          f"{', '.join(KINDS)}")
    if kind not in KINDS:
        raise ConfigError(f"{source}: [protocol].kind must be one of {', '.join(KINDS)}, "
                          f"got {_show(kind)}{did_you_mean(kind, KINDS)}")
    allowed = SECTIONS_BY_KIND[kind]
    for section in data:
        if section not in allowed:
            hint = (f"unknown section{did_you_mean(section, allowed)}" if section not in SCHEMA
                    else f"not used by kind {kind!r}")
            raise ConfigError(f"{source}: [{_name(section)}] {hint}; this kind reads "
                              f"{', '.join(f'[{s}]' for s in allowed)}")
    for section in REQUIRED_SECTIONS[kind]:
        if section not in data:
            raise ConfigError(f"{source}: kind {kind!r} needs a [{section}] section")
    keys_read, condition = _keys_read(kind, data, source)
    resolved: dict[str, dict[str, Any]] = {}
    for section in allowed:
        table = data.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table, got {_show(table)}")
        fields = SCHEMA[section]
        for key in table:
            if key not in fields:
                raise ConfigError(f"{source}: unknown key [{section}].{_name(key)}"
                                  f"{did_you_mean(key, fields)}; known: {', '.join(fields)}")
        read = keys_read.get(section)
        if read is not None:
            _refuse_unread(table, read, kind, section, f"{source}: kind {kind!r}{condition}")
            if not read:  # a section the kind does not read at all is left out
                continue
            fields = {key: spec for key, spec in fields.items() if key in read}
        resolved[section] = {}
        for key, spec in fields.items():
            where = f"{source}: [{section}].{key}"
            if key in table:
                resolved[section][key] = _check(table[key], spec, where, f"{section}.{key}")
            elif spec.default is REQUIRED:
                raise ConfigError(f"{where} is required")
            else:
                resolved[section][key] = _copy(spec.default)
    # it names the result folder results/NAME: "." would let --force replace results/
    folder_name(resolved["protocol"]["name"], f"{source}: [protocol].name")
    if "model" in resolved:
        try:
            find_model_file(resolved["model"]["name"])
        except ModelError as error:
            raise ConfigError(f"{source}: [model].name: {error}") from None
    _check_network_size(resolved, source)
    _check_alpha(resolved, source)
    _check_gradient_checks(resolved, source)
    _check_engine_and_rule(resolved, kind, source)
    return resolved


def _keys_read(kind: str, data: Mapping[str, Any], source: str
               ) -> tuple[dict[str, tuple[str, ...]], str]:
    """The keys of each section ``kind`` reads, where it reads only some (as
    :data:`KEYS_READ`), and the condition they depend on, for errors (``""``: none)."""
    if kind == "asymmetry":
        table = data.get("asymmetry", {})
        train = table.get("train", True) if isinstance(table, Mapping) else True
        if not _check(train, SCHEMA["asymmetry"]["train"], f"{source}: [asymmetry].train"):
            return ASYMMETRY_UNTRAINED_KEYS_READ, " with [asymmetry].train = false"
    return KEYS_READ.get(kind, {}), ""


def refuse_unread_changes(config: Mapping[str, Any], paths: Iterable[Sequence[str]],
                          source: str) -> None:
    """Refuse a changed key (``--set``, a sweep's setting: its ``[section, key]`` path) that
    the validated protocol's kind does not read, whatever its value: a change asks for a
    setting (a file may hold an unread key at its default, :func:`_refuse_unread`). So is
    ``[network].alpha`` for a network whose coupling is not ``asymmetric``."""
    kind = config["protocol"]["kind"]
    keys_read, condition = _keys_read(kind, config, source)
    coupling = config.get("network", {}).get("coupling", "asymmetric")
    for path in paths:
        if list(path) == ["network", "alpha"] and coupling != "asymmetric":
            # (a value other than the default was refused by validate)
            raise ConfigError(_alpha_message(source, coupling, DEFAULT_ALPHA))
        read = keys_read.get(path[0])
        if read is not None and len(path) > 1 and path[1] not in read:
            _refuse_unread({path[1]: None}, read, kind, path[0],
                           f"{source}: kind {kind!r}{condition}", even_at_default=True)


def _refuse_unread(table: Mapping[str, Any], read: tuple[str, ...], kind: str, section: str,
                   who: str, even_at_default: bool = False) -> None:
    """Refuse a key of ``[section]`` that is not in ``read`` (``who``: the kind, in the
    error), unless it holds its default, as resolved protocols of earlier versions wrote
    (``even_at_default``: whatever it holds)."""
    fields = SCHEMA[section]
    ignored = [key for key in table if key not in read
               and (even_at_default or table[key] != fields[key].default)]
    if not ignored:
        return
    key = ignored[0]
    reads = (f"it reads only {', '.join(read)} of [{section}]" if read
             else f"it reads no key of [{section}]")
    hint = UNREAD_HINTS.get((kind, section, key))
    raise ConfigError(f"{who} does not read [{section}].{_name(key)} ({reads}"
                      f"{f'; {hint}' if hint else ''}; {read_by(section, key, kind)})")


def kinds_reading(section: str, key: str) -> list[str]:
    """The kinds that read ``[section].key`` (an asymmetry protocol as with ``train =
    true``)."""
    return [kind for kind, sections in SECTIONS_BY_KIND.items() if section in sections
            and key in KEYS_READ.get(kind, {}).get(section, (key,))]


def read_by(section: str, key: str, refusing: str | None = None) -> str:
    """``"kind train reads it"``, for an error about a kind that does not read it (the
    ``refusing`` kind, if it reads it with other settings, as ``"asymmetry (otherwise)"``)."""
    kinds = [f"{kind} (otherwise)" if kind == refusing else kind
             for kind in kinds_reading(section, key)]
    return (f"kind {kinds[0]} reads it" if len(kinds) == 1
            else f"kinds {', '.join(kinds)} read it")


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else (dict(value)
                                                        if isinstance(value, dict) else value)


def _check(value: Any, spec: Field, where: str, dotted: str = "") -> Any:
    """``value`` checked against ``spec`` (``where``: the key in errors; ``dotted``: its
    ``section.key``, for the ``--set`` of a hint)."""
    kind = spec.kind
    if kind.startswith("optional_"):
        return None if value is None else _check(value, _replace_kind(spec, kind[9:]), where,
                                                 dotted)
    if kind.startswith("list["):
        item_kind = kind[5:-1]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where} must be a non-empty list of {item_kind}s, "
                              f"got {_show(value)}")
        return [_check(item, _replace_kind(spec, item_kind), where) for item in value]
    if kind == "table":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {_show(value)}")
        return {str(k): _number(v, f"{where}.{_name(k)}") for k, v in value.items()}
    if kind == "lr":
        if isinstance(value, Mapping):
            return {str(k): _bounded(_number(v, f"{where}.{_name(k)}"), spec,
                                     f"{where}.{_name(k)}", 0.0)
                    for k, v in value.items()}
        return _bounded(_number(value, where), spec, where, 0.0)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if kind == "str":
        if isinstance(value, (datetime.date, datetime.time)):
            raise ConfigError(_toml_date_message(value, where, dotted))
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{where}: unknown value {_show(value)}"
                              f"{did_you_mean(value, spec.choices)}; known: "
                              f"{', '.join(spec.choices)}")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return int(_bounded(value, spec, where))
    if kind == "float":
        return _bounded(_number(value, where), spec, where)
    raise AssertionError(f"schema kind {kind!r}")  # a bug in SCHEMA, not in the file


def _toml_date_message(value: datetime.date | datetime.time, where: str, dotted: str) -> str:
    """A string key given an unquoted date or time, which TOML reads as one (``name =
    2024-01-01``, or ``--set protocol.name=2024-01-01``): say so, and how to quote it."""
    what = ("date-time" if isinstance(value, datetime.datetime) else
            "date" if isinstance(value, datetime.date) else "time")
    text = value.isoformat()
    on_command_line = f"; with --set: '{dotted}=\"{text}\"'" if dotted else ""
    return (f"{where} must be a string, got {text}, which TOML reads as a {what} (it is "
            f'not quoted): quote it, "{text}"{on_command_line}')


def _name(key: Any) -> str:
    """A key as written in an error: plain if it is an identifier, else quoted (one line)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _show(value: Any) -> str:
    """A value in an error message, shortened (a hostile file may hold huge strings)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 80, 80, 8, 6, 3


def _replace_kind(spec: Field, kind: str) -> Field:
    return Field(kind, spec.default, spec.choices, spec.minimum, spec.positive, spec.maximum)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {_show(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {_show(value)}")
    return float(value)


def _bounded(value: float, spec: Field, where: str, minimum: float | None = None) -> float:
    minimum = spec.minimum if minimum is None else minimum
    if spec.positive and value <= 0:
        raise ConfigError(f"{where} must be positive, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} must be at least {minimum}, got {_show(value)}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{where} must be at most {spec.maximum}, got {_show(value)}")
    return value


def _check_network_size(resolved: dict[str, dict[str, Any]], source: str) -> None:
    for section in ("network", "gradcheck", "stochastic"):
        sizes = resolved.get(section, {}).get("sizes")
        if sizes is None:
            continue
        if len(sizes) < 2:
            raise ConfigError(f"{source}: [{section}].sizes needs an input and an output layer, "
                              f"got {sizes}")
        synapses = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        options = resolved.get("network", {})
        if options.get("lateral"):  # within every layer but the clamped input
            synapses += sum(n * n for n in sizes[1:])
        if options.get("skip"):  # l-2 -> l
            synapses += sum(a * b for a, b in zip(sizes[:-2], sizes[2:], strict=False))
        if synapses > MAX_SYNAPSES:
            raise ConfigError(f"{source}: [{section}].sizes {sizes} has {synapses:,} synapses, "
                              f"more than the {MAX_SYNAPSES:,} a protocol may ask for")


def _check_alpha(resolved: dict[str, dict[str, Any]], source: str) -> None:
    """``[network].alpha`` sets the asymmetry of coupling ``asymmetric`` only: with another
    coupling it is refused, unless it holds the default ``1.0`` that earlier versions wrote
    into every resolved protocol.toml (or ``None``, as the resolved config holds it), and
    resolved to ``None`` (left out of the resolved protocol; the network is built without
    one)."""
    network = resolved.get("network", {})
    if "alpha" not in network:
        return
    if network.get("coupling", "asymmetric") == "asymmetric":
        if network["alpha"] is None:  # (a resolved protocol of another coupling, changed)
            network["alpha"] = DEFAULT_ALPHA
        return
    if network["alpha"] not in (None, DEFAULT_ALPHA):
        raise ConfigError(_alpha_message(source, network["coupling"], network["alpha"]))
    network["alpha"] = None


def _alpha_message(source: str, coupling: str, alpha: Any) -> str:
    return (f"{source}: [network].alpha = {_show(alpha)} sets the asymmetry of coupling "
            f"'asymmetric' (initial backward weights B = (1-α)Wᵀ + αR), and "
            f"[network].coupling = {coupling!r} has none: leave alpha out, or set "
            'coupling = "asymmetric"')


def _check_gradient_checks(resolved: dict[str, dict[str, Any]], source: str) -> None:
    """What a gradient check would refuse when it runs: unknown models, and networks
    larger than its oracle's limit (:data:`neuroeq.gradcheck.MAX_UNITS`)."""
    for name in resolved.get("gradcheck", {}).get("models", ()):
        try:
            find_model_file(name)
        except ModelError as error:
            raise ConfigError(f"{source}: [gradcheck].models: {error}") from None
    if "gradcheck" in resolved:
        section = resolved["gradcheck"]
        try:
            check_alphas(section["couplings"], section["alphas"], "[gradcheck].alphas")
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    for section, key in (("gradcheck", "sizes"), ("asymmetry", "gradcheck_sizes")):
        sizes = resolved.get(section, {}).get(key)
        if sizes is None:
            continue
        where = f"{source}: [{section}].{key}"
        if len(sizes) < 2:
            raise ConfigError(f"{where} needs an input and an output layer, got {sizes}")
        if sum(sizes[1:]) > GRADCHECK_MAX_UNITS:
            raise ConfigError(f"{where} {sizes} has {sum(sizes[1:]):,} units beyond the "
                              f"input, more than the {GRADCHECK_MAX_UNITS:,} a gradient check "
                              "may ask for (its oracle solves with the dense Jacobian of the "
                              "state)")


def _check_engine_and_rule(resolved: dict[str, dict[str, Any]], kind: str, source: str
                           ) -> None:
    """Keys that only some engines or rules read, and rules that need a given engine."""
    engine = resolved.get("engine")
    if engine is not None:
        name = engine["name"]
        for key, engines in ENGINE_OPTIONS.items():
            if engine[key] is not None and name not in engines:
                raise ConfigError(f"{source}: [engine].{key} applies to engine "
                                  f"{' or '.join(engines)}, not {name!r}")
        for key, solver in SOLVER_OPTIONS.items():
            if engine[key] is not None and name == "torch" and engine["solver"] != solver:
                raise ConfigError(f"{source}: [engine].{key} applies to solver {solver!r}, "
                                  f"not {engine['solver']!r} (set [engine].solver = "
                                  f'"{solver}" or leave {key} out)')
        if name == "torch" and engine["target"] != "cython":
            raise ConfigError(f"{source}: [engine].target applies to the Brian2 engines "
                              "(name brian2 or spiking), not 'torch'")
        if name == "spiking" and engine["solver"] != "euler":
            raise ConfigError(f"{source}: [engine].solver applies to engine torch, not "
                              "'spiking' (leave it at 'euler')")
        if name == "spiking" and kind != "train":
            raise ConfigError(f"{source}: [engine].name 'spiking' needs a train protocol with "
                              f"rule {' or '.join(SPIKING_RULES)}, not kind {kind!r}")
    if engine is not None and engine["name"] == "brian2":
        asymmetry = resolved.get("asymmetry", {"train": False})
        named = [("[rule].name", resolved["rule"]["name"])] if "rule" in resolved else []
        if asymmetry["train"]:  # the gradient checks of an asymmetry protocol run on torch
            named += [("[asymmetry].rules", name) for name in asymmetry["rules"]]
        for where, name in named:
            if name not in BRIAN2_RULES:
                raise ConfigError(f"{source}: {where} {name!r} does not run on the Brian2 "
                                  "engine (it simulates the model's own state, with AsymEP's "
                                  "correction; no autograd, doubled state, complex nudges or "
                                  f"sampling): use [engine].name = 'torch', or one of "
                                  f"{', '.join(BRIAN2_RULES)}")
    rule = resolved.get("rule")
    if rule is None:
        return
    name = rule["name"]
    for key, rules in RULE_OPTIONS.items():
        if rule[key] is not None and name not in rules:
            raise ConfigError(f"{source}: [rule].{key} applies to rule {' or '.join(rules)}, "
                              f"not {name!r}")
    if name in GIBBS_RULES and rule["beta"] > 1:
        raise ConfigError(f"{source}: [rule].beta must be at most 1 for rule {name!r} (the "
                          f"nudge scales the loss, up to the full loss), got {rule['beta']}")
    if engine is not None:
        spiking = engine["name"] == "spiking"
        if (name in SPIKING_RULES) != spiking:
            raise ConfigError(
                f"{source}: [rule].name {name!r} needs [engine].name = 'spiking'" if not spiking
                else f"{source}: [engine].name 'spiking' runs rule "
                     f"{' or '.join(SPIKING_RULES)} only, not [rule].name {name!r}")


def schema_markdown() -> str:
    """The schema as Markdown tables (docs/protocols.md embeds this text)."""
    lines = []
    for section, fields in SCHEMA.items():
        kinds = [kind for kind, sections in SECTIONS_BY_KIND.items() if section in sections]
        lines += [f"### `[{section}]` (kinds: {', '.join(kinds)})", "",
                  "| key | type | default | allowed / notes |", "|---|---|---|---|"]
        for key, spec in fields.items():
            default = "required" if spec.default is REQUIRED else (
                spec.default_doc if spec.default is None else f"`{spec.default!r}`")
            notes = ", ".join(f"`{c}`" for c in spec.choices) if spec.choices else ""
            bounds = []
            if spec.positive:
                bounds.append("> 0")
            if spec.minimum is not None:
                bounds.append(f">= {spec.minimum:g}")
            if spec.maximum is not None:
                bounds.append(f"<= {spec.maximum:,}" if isinstance(spec.maximum, int)
                              else f"<= {spec.maximum:g}")
            notes = "; ".join(part for part in (notes, " and ".join(bounds), spec.doc) if part)
            lines.append(f"| `{key}` | {spec.kind} | {default} | {notes} |")
        lines.append("")
    return "\n".join(lines)


#: the command that rewrites docs/protocols.md's key tables (from the repository root)
REGENERATE_DOCS = ('python3 -c "from neuroeq.protocols.schema import update_schema_docs; '
                   "update_schema_docs('docs/protocols.md')\"")


def update_schema_docs(path: str | Path) -> bool:
    """Rewrite the key tables of ``docs/protocols.md`` (everything after its ``## Keys``
    heading) with :func:`schema_markdown`; ``True`` when the file changed. Call it after
    changing the schema or a rule's options (:data:`REGENERATE_DOCS`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    heading = "\n## Keys\n"
    if heading not in text:
        raise ConfigError(f"{path}: no '## Keys' heading to put the key tables under")
    new = text[:text.index(heading) + len(heading)] + "\n" + schema_markdown()
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True
