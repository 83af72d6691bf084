"""Neuron models as data: read a model file from ``models/`` and check it.

A model file (TOML) declares the neuron's differential equations in Brian2 syntax, its
parameters with units, the rate nonlinearity ``rho`` of the variable it sends through its
synapses, and its structural class (``gradient``, ``skew_gradient`` with ``Q``, or
``general``). Both engines read the same :class:`NeuronModel`.

The equations may use, besides their own state variables and parameters, the symbols the
engines provide: ``I_syn`` (summed synaptic input ``Σ_j W_ij ρ(s_j)``, input layer
included), ``bias`` (the neuron's learnable bias), ``rho`` and ``rho_prime`` (``ρ`` and
``ρ'`` of the coupled variable). A model may declare extra coupling channels under
``[channels.NAME]`` (each with its own ``rho``/``rho_prime``); the synapses then also carry
``I_syn_NAME = Σ_j W_ij ρ_NAME(s_j)`` through the same weights, and the coupling energy is
``-Σ_channels ρ_cᵀ W ρ_c``. Oscillators need this: ``cos(φ_i - φ_j) = cos φ_i cos φ_j +
sin φ_i sin φ_j`` is two channels (``cos`` primary, ``sin`` extra). Loading never executes
code from the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy

from neuroeq.brian2_import import import_brian2
from neuroeq.checks import did_you_mean, nonnegative_number, positive_number, whole_number
from neuroeq.errors import ConfigError, ModelError
from neuroeq.expressions import (
    MAX_EXPRESSION_CHARS,
    check_expression,
    compile_expression,
    free_symbols,
    parse_expression,
)
from neuroeq.toml_data import read_toml

STRUCTURAL_CLASSES = ("gradient", "skew_gradient", "general")
ENGINE_SYMBOLS = ("I_syn", "bias", "rho", "rho_prime")
#: names a parameter may not take: the engines' symbols and Brian2's (time, step, noise,
#: index, size)
RESERVED_NAMES = frozenset({*ENGINE_SYMBOLS, "t", "dt", "xi", "i", "N"})
PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_KNOWN_KEYS = {
    "name", "title", "reference", "structural_class", "coupled_variable", "time_constant",
    "equations", "rho", "rho_prime", "energy", "Q", "parameters", "initial", "bounds",
    "integration", "notes", "spiking", "channels",
}
MODEL_PATH_ENV = "NEUROEQ_MODEL_PATH"
INTEGRATION_KEYS = ("dt", "max_steps", "tol")
SPIKING_KEYS = ("dt", "draw", "on_pre", "nudge", "burn_in", "window")
#: ``[spiking] nudge``: the output's teaching current (``SpikingEngine.nudge_gradient``)
SPIKING_NUDGES = ("chain_rule", "rate_error")
#: one statement of a Brian2 ``on_pre`` pathway: ``target op expression``
_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(\+=|-=|\*=|/=|=)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class StateEquation:
    """``d<variable>/dt = rhs`` with ``rhs`` as Brian2 code and as a sympy tree."""

    variable: str
    code: str
    expr: sympy.Expr


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model read from a file: equations, parameters (SI floats), ``ρ``, class."""

    name: str
    title: str
    structural_class: str
    equations_code: str
    state: tuple[StateEquation, ...]
    coupled_variable: str
    time_constant: str
    rho_code: str
    rho_prime_code: str
    parameters: dict[str, float]
    parameter_units: dict[str, str]
    initial: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    Q: dict[str, str] = field(default_factory=dict)
    energy_code: str | None = None
    channels: dict[str, tuple[str, str]] = field(default_factory=dict)
    integration: dict[str, Any] = field(default_factory=dict)
    spiking: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    notes: str = ""
    source: str = ""

    @property
    def state_variables(self) -> tuple[str, ...]:
        return tuple(eq.variable for eq in self.state)

    @property
    def tau(self) -> float:
        """The time constant in seconds (SI), used to scale residuals and nudges."""
        return self.parameters[self.time_constant]

    def integration_setting(self, key: str, default: float) -> float:
        """A number from the model's ``[integration]`` table in SI units (``dt`` in s)."""
        if key not in self.integration:
            return default
        value, _ = _parameter_value(key, self.integration[key], f"model {self.name!r} integration")
        return value

    def q_values(self) -> dict[str, float]:
        """The diagonal of ``Q`` as numbers (skew-gradient: ``F = -(1/τ) Q ∇E``)."""
        values = {}
        for variable in self.state_variables:
            code = self.Q.get(variable, "1")
            expr = parse_expression(str(code), f"model {self.name!r}: Q[{variable}]")
            value = expr.subs({sympy.Symbol(k, real=True): v for k, v in self.parameters.items()})
            try:
                values[variable] = float(value)
            except (TypeError, ValueError):
                raise ModelError(f"model {self.name!r}: Q[{variable}] = {str(code)!r} must be a "
                                 "number or an expression of parameters") from None
        return values

    def with_parameters(self, **overrides: float) -> NeuronModel:
        """A copy with some parameters replaced (SI values), e.g. ``eps=3.0``."""
        unknown = set(overrides) - set(self.parameters)
        if unknown:
            raise ModelError(f"model {self.name!r}: unknown parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(self.parameters)}")
        for key, value in overrides.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ModelError(f"model {self.name!r}: parameter {key!r} must be a number in "
                                 f"SI units (the file gives it in {self.parameter_units[key]!r}"
                                 f"), got {value!r}")
        params = {**self.parameters, **{k: _as_float(v) for k, v in overrides.items()}}
        bad = sorted(k for k, v in params.items() if not math.isfinite(v))
        if bad:
            raise ModelError(f"model {self.name!r}: parameter(s) {bad} must be finite")
        if params[self.time_constant] <= 0:
            raise ModelError(f"model {self.name!r}: time constant {self.time_constant!r} must "
                             f"be positive, got {params[self.time_constant]}")
        return _replace(self, parameters=params)

    def describe(self) -> dict[str, Any]:
        """A plain dictionary for dataset attributes and logs."""
        return {
            "name": self.name, "structural_class": self.structural_class,
            "equations": self.equations_code.strip(), "rho": self.rho_code,
            "parameters": dict(self.parameters), "source": self.source,
        }


def _replace(model: NeuronModel, **changes: Any) -> NeuronModel:
    from dataclasses import replace

    return replace(model, **changes)


def model_search_path() -> list[Path]:
    """Directories searched for model files: ``$NEUROEQ_MODEL_PATH``, then the shipped zoo."""
    paths = [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    package_dir = Path(__file__).resolve().parent
    paths += [package_dir.parent / "models", package_dir / "_bundled_models"]
    return paths


def available_models() -> list[str]:
    """Names of the model files found on the search path."""
    names = set()
    for directory in model_search_path():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.toml"))
    return sorted(names)


def find_model_file(name_or_path: str | os.PathLike) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if candidate.is_dir():
            raise ModelError(f"model file {str(candidate)!r} is a directory; give a model "
                             "name or the path of its .toml file")
        if not candidate.is_file():
            raise ModelError(f"model file {str(candidate)!r} does not exist (a relative path "
                             "is read from the current directory)")
        return candidate
    for directory in model_search_path():
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path
    available = available_models()
    raise ModelError(f"unknown model {str(name_or_path)!r}"
                     f"{did_you_mean(name_or_path, available)}; available: "
                     f"{', '.join(available) or '(none found)'}")


def load_model(name_or_path: str | os.PathLike, **parameter_overrides: float) -> NeuronModel:
    """Read and check a model by name (``"fhn"``) or path (``"my_models/izh.toml"``)."""
    path = find_model_file(name_or_path)
    data = read_toml(path, "model", ModelError)
    model = model_from_dict(data, source=str(path))
    return model.with_parameters(**parameter_overrides) if parameter_overrides else model


def _require(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ModelError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(f"{where}: key {key!r} must be a {kind.__name__}, "
                         f"got {type(value).__name__}")
    return value


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """The optional table ``key`` of a model file (empty when absent)."""
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ModelError(f"{where}: {key!r} must be a table, got {type(value).__name__}")
    return dict(value)


def _parameter_value(name: str, spec: Any, where: str) -> tuple[float, str]:
    """``{value = 1.0, unit = "ms"}`` or a bare number -> (SI float, unit name)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value, unit = _as_float(spec), "1"
    elif isinstance(spec, Mapping):
        unknown = set(spec) - {"value", "unit", "doc"}
        if unknown:
            raise ModelError(f"{where}: parameter {name!r} has unknown key(s) {sorted(unknown)}")
        raw = spec.get("value")
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            raise ModelError(f"{where}: parameter {name!r} needs a numeric 'value'")
        unit = spec.get("unit", "1")
        if not isinstance(unit, str):
            raise ModelError(f"{where}: parameter {name!r} has a unit that is not a string")
        value = _as_float(raw)
    else:
        raise ModelError(f"{where}: parameter {name!r} must be a number or "
                         f"{{value = ..., unit = ...}}, got {type(spec).__name__}")
    if not math.isfinite(value):
        raise ModelError(f"{where}: parameter {name!r} is {value}; it must be finite")
    scaled = value * _unit_scale(unit, name, where)
    if not math.isfinite(scaled):
        raise ModelError(f"{where}: parameter {name!r} = {value} {unit} overflows in SI units")
    return scaled, unit


def _as_float(value: float) -> float:
    """``float(value)``, ``inf`` for an integer too large for a float (``10**400``), so that
    the finiteness checks name it."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _brian2_unit(unit: str, name: str, where: str) -> Any:
    """The Brian2 unit called ``unit`` (``ms``, ``mV``); a :class:`ModelError` otherwise."""
    import_brian2()
    import brian2.units as units
    from brian2.units.fundamentalunits import Unit

    found = getattr(units, unit, None)
    if not isinstance(found, Unit):
        raise ModelError(f"{where}: parameter {name!r} has unknown unit {unit!r} "
                         "(use a Brian2 unit name such as 'ms', 'mV', 'Hz')")
    return found


def _unit_scale(unit: str, name: str, where: str) -> float:
    return 1.0 if unit in ("1", "") else float(_brian2_unit(unit, name, where))


def _require_time(unit: str, name: str, where: str) -> None:
    """A :class:`ModelError` unless ``unit`` is a time (``ms``, ``second``) or none (a bare
    number, read as seconds)."""
    if unit in ("1", ""):
        return
    from brian2.units import second

    if _brian2_unit(unit, name, where).dim != second.dim:
        raise ModelError(f"{where}: {name} has unit {unit!r}, which is not a time; give it in "
                         "ms, second, ... (or as a bare number of seconds)")


def model_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> NeuronModel:
    """Build a :class:`NeuronModel` from parsed TOML data, checking every key."""
    where = f"model file {source!r}"
    if not isinstance(data, Mapping):
        raise ModelError(f"{where}: expected a table at top level")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN_KEYS)}")
    name = _require(data, "name", str, where)
    where = f"model {name!r} ({source})"
    structural_class = _require(data, "structural_class", str, where)
    if structural_class not in STRUCTURAL_CLASSES:
        raise ModelError(f"{where}: structural_class {structural_class!r} must be one of "
                         f"{', '.join(STRUCTURAL_CLASSES)}")
    equations_code = _require(data, "equations", str, where)
    coupled = _require(data, "coupled_variable", str, where)
    time_constant = _require(data, "time_constant", str, where)

    parameters, units = {}, {}
    for key, spec in _table(data, "parameters", where).items():
        if not PARAMETER_NAME.fullmatch(key) or key in RESERVED_NAMES \
                or key.startswith("I_syn_"):
            raise ModelError(f"{where}: parameter name {key!r} must be a plain identifier "
                             "(a letter, then letters, digits or _) and none of "
                             f"{', '.join(sorted(RESERVED_NAMES))} or I_syn_NAME, which the "
                             "engines define")
        parameters[key], units[key] = _parameter_value(key, spec, where)
    if time_constant not in parameters:
        raise ModelError(f"{where}: time_constant {time_constant!r} is not a parameter")
    if parameters[time_constant] <= 0:
        raise ModelError(f"{where}: time constant {time_constant!r} must be positive")
    _require_time(units[time_constant], f"time constant {time_constant!r}", where)

    state = _parse_equations(equations_code, where)
    variables = [eq.variable for eq in state]
    if coupled not in variables:
        raise ModelError(f"{where}: coupled_variable {coupled!r} is not a state variable "
                         f"(state variables: {', '.join(variables)})")
    _refuse_engine_names(parameters, variables, where)
    channels = _parse_channels(_table(data, "channels", where), coupled, parameters, where)
    engine_symbols = set(ENGINE_SYMBOLS) | {f"I_syn_{name}" for name in channels}
    clash = set(variables) & (set(parameters) | engine_symbols)
    if clash:
        raise ModelError(f"{where}: name(s) {sorted(clash)} used both as state variable and "
                         "as parameter or engine symbol")
    allowed = set(variables) | set(parameters) | engine_symbols
    for eq in state:
        unknown_symbols = free_symbols(eq.expr) - allowed
        if unknown_symbols:
            raise ModelError(f"{where}: equation for {eq.variable!r} uses undefined name(s) "
                             f"{sorted(unknown_symbols)}; define them under [parameters]")

    rho_code = _require(data, "rho", str, where)
    rho_prime_code = _require(data, "rho_prime", str, where)
    for label, code in (("rho", rho_code), ("rho_prime", rho_prime_code)):
        symbols = free_symbols(parse_expression(code, f"{where}: {label}"))
        if symbols - ({coupled} | set(parameters)):
            raise ModelError(f"{where}: {label} may depend only on {coupled!r} and parameters, "
                             f"found {sorted(symbols - ({coupled} | set(parameters)))}")
    check_rate_derivative(rho_code, rho_prime_code, coupled, parameters, where)
    energy = data.get("energy")
    if energy is not None:
        if not isinstance(energy, str):
            raise ModelError(f"{where}: energy must be an expression string")
        unknown_symbols = (free_symbols(parse_expression(energy, f"{where}: energy"))
                           - (set(variables) | set(parameters)))
        if unknown_symbols:
            raise ModelError(f"{where}: energy may depend only on the state variables "
                             f"{variables} and parameters, found {sorted(unknown_symbols)}; "
                             "define them under [parameters] or remove them")
    if structural_class != "general" and energy is None:
        raise ModelError(f"{where}: a {structural_class} model must declare its 'energy'")
    q_table = {k: str(v) for k, v in _table(data, "Q", where).items()}
    if set(q_table) - set(variables):
        raise ModelError(f"{where}: Q names unknown state variable(s) "
                         f"{sorted(set(q_table) - set(variables))}")

    initial = {v: 0.0 for v in variables}
    for key, value in _table(data, "initial", where).items():
        if (key not in initial or not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)):
            raise ModelError(f"{where}: initial.{key} must name a state variable and be a "
                             "finite number")
        initial[key] = float(value)
    bounds = {}
    for key, value in _table(data, "bounds", where).items():
        if (key not in variables or not isinstance(value, list) or len(value) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                           and not math.isnan(b) for b in value) or value[0] >= value[1]):
            raise ModelError(f"{where}: bounds.{key} must be [low, high] for a state variable")
        if not all(math.isfinite(b) for b in value):
            raise ModelError(f"{where}: bounds.{key} = {value} must be finite numbers; leave "
                             f"{key!r} out of [bounds] to leave it unbounded")
        bounds[key] = (float(value[0]), float(value[1]))
    model = NeuronModel(
        name=name, title=str(data.get("title", name)), structural_class=structural_class,
        equations_code=equations_code, state=tuple(state), coupled_variable=coupled,
        time_constant=time_constant, rho_code=rho_code, rho_prime_code=rho_prime_code,
        parameters=parameters, parameter_units=units, initial=initial, bounds=bounds,
        Q=q_table, energy_code=energy, channels=channels,
        integration=_integration(_table(data, "integration", where), where),
        spiking=check_spiking_table(_table(data, "spiking", where), where),
        reference=str(data.get("reference", "")),
        notes=str(data.get("notes", "")), source=source,
    )
    if structural_class == "skew_gradient":
        q = model.q_values()
        if q.get(coupled) != 1.0:
            raise ModelError(f"{where}: a skew-gradient model needs Q = 1 on the coupled "
                             f"variable {coupled!r} (got {q.get(coupled)})")
    return model


def _refuse_engine_names(parameters: Mapping[str, float], variables: list[str],
                         where: str) -> None:
    """Refuse parameter and state-variable names that the Brian2 engines define themselves
    (``I_in``, ``nudge``, ``w_syn``, ``I_e<k>``, ``<var>_star``, ``g_<var>``, Brian2's units,
    ...: :data:`~neuroeq.engines.brian2_common.ENGINE_NAMES`), where Brian2 would read the
    engine's variable in place of the model's; and state variables from which the engines
    would make one name twice."""
    from neuroeq.engines.brian2_common import engine_name_clashes, engine_name_meaning

    for kind, names in (("parameter", parameters), ("state variable", variables)):
        for name in names:
            meaning = engine_name_meaning(name, variables)
            if meaning is not None:
                raise ModelError(f"{where}: {kind} name {name!r} is reserved: the Brian2 "
                                 f"engines use it for {meaning} and would read theirs in place "
                                 f"of the model's; rename it (e.g. to '{name}_model')")
    for name, meanings in engine_name_clashes(variables).items():
        raise ModelError(f"{where}: the state variables {variables} give the Brian2 engines "
                         f"the name {name!r} twice ({'; '.join(meanings)}); rename one of "
                         "them")


def _integration(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``[integration]`` table, checked: ``dt`` a positive time, ``max_steps`` a whole
    number ≥ 1, ``tol`` a non-negative number (the engines' defaults where a key is absent)."""
    unknown = set(table) - set(INTEGRATION_KEYS)
    if unknown:
        raise ModelError(f"{where}: [integration] has unknown key(s) {sorted(unknown)}; "
                         f"known: {', '.join(INTEGRATION_KEYS)}")
    label = f"{where}: [integration]"
    try:
        if "dt" in table:
            value, unit = _parameter_value("dt", table["dt"], label)
            positive_number(value, f"{label} dt", "seconds")
            _require_time(unit, "[integration] dt", where)
        if "max_steps" in table:
            whole_number(table["max_steps"], f"{label} max_steps", 1)
        if "tol" in table:
            nonnegative_number(table["tol"], f"{label} tol")
    except ConfigError as error:
        raise ModelError(str(error)) from None
    return dict(table)


def check_spiking_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``[spiking]`` table (how the Brian2 spiking engine realises the neuron), checked:
    known keys; ``dt`` a positive time (returned in seconds); ``burn_in`` and ``window``
    whole numbers of steps; ``nudge`` one of :data:`SPIKING_NUDGES`; ``draw`` an expression
    and ``on_pre`` lines of ``target op expression``, whose expressions pass
    :func:`check_expression` (Brian2 hands them to sympy, which evaluates strings)."""
    unknown = set(table) - set(SPIKING_KEYS)
    label = f"{where} [spiking]"
    if unknown:
        raise ModelError(f"{label}: unknown key(s) {sorted(unknown)}; known: "
                         f"{', '.join(SPIKING_KEYS)}")
    checked = dict(table)
    try:
        if "dt" in table:
            value, unit = _parameter_value("dt", table["dt"], label)
            checked["dt"] = positive_number(value, f"{label} dt", "seconds")
            _require_time(unit, "[spiking] dt", where)
        for key, low in (("burn_in", 0), ("window", 1)):  # step counts, without units
            if isinstance(table.get(key), Mapping):
                raise ModelError(f"{label}: {key} is a number of steps, not a quantity with "
                                 "a unit")
            if key in table:
                checked[key] = whole_number(table[key], f"{label} {key}", low)
    except ConfigError as error:
        raise ModelError(str(error)) from None
    if table.get("nudge", SPIKING_NUDGES[0]) not in SPIKING_NUDGES:
        raise ModelError(f"{label}: nudge {table['nudge']!r} must be one of "
                         f"{', '.join(SPIKING_NUDGES)}")
    for key in ("draw", "on_pre"):
        if key in table and not isinstance(table[key], str):
            raise ModelError(f"{label}: {key} must be a string of Brian2 code, got "
                             f"{type(table[key]).__name__}")
    for key in ("draw", "on_pre"):  # pasted into Brian2 code: one line per statement
        if ";" in str(table.get(key, "")):
            raise ModelError(f"{label}: {key} may not hold ';' (one statement per line)")
    if "draw" in table:
        if "\n" in table["draw"].strip():
            raise ModelError(f"{label}: draw must be one line (an expression)")
        check_expression(table["draw"], f"{label} draw")
    for line in str(table.get("on_pre", "")).splitlines():
        code = line.split("#", 1)[0]
        if not code.strip():
            continue
        statement = _STATEMENT.match(code)
        if statement is None:
            raise ModelError(f"{label}: on_pre line {line.strip()!r} must be a statement "
                             "'target = expression' (or +=, -=, *=, /=)")
        check_expression(statement.group(3), f"{label} on_pre")
    return checked


def _parse_channels(table: Any, coupled: str, parameters: Mapping[str, float], where: str
                    ) -> dict[str, tuple[str, str]]:
    """``[channels.NAME] rho = ..., rho_prime = ...`` → ``{NAME: (rho, rho_prime)}``."""
    if not isinstance(table, Mapping):
        raise ModelError(f"{where}: 'channels' must be a table of [channels.NAME] tables")
    channels = {}
    for name, spec in table.items():
        if not str(name).isidentifier():
            raise ModelError(f"{where}: channel name {name!r} must be an identifier")
        if not isinstance(spec, Mapping) or set(spec) != {"rho", "rho_prime"}:
            raise ModelError(f"{where}: [channels.{name}] needs exactly the keys 'rho' and "
                             "'rho_prime' (expressions of the coupled variable)")
        for label in ("rho", "rho_prime"):
            code = spec[label]
            symbols = free_symbols(parse_expression(str(code), f"{where}: channels.{name}.{label}"))
            if symbols - ({coupled} | set(parameters)):
                raise ModelError(f"{where}: channels.{name}.{label} may depend only on "
                                 f"{coupled!r} and parameters, found "
                                 f"{sorted(symbols - ({coupled} | set(parameters)))}")
        channels[str(name)] = (str(spec["rho"]), str(spec["rho_prime"]))
        check_rate_derivative(*channels[str(name)], coupled, parameters,
                              f"{where}: channels.{name}")
    return channels


def check_rate_derivative(rho_code: str, prime_code: str, coupled: str,
                          parameters: Mapping[str, float], where: str) -> None:
    """``rho_prime`` must be ``dρ/du``: compared with central differences of ``rho`` (float64,
    ``h = 1e-6``) at 600 points of ``u ∈ [-3, 3]``, leaving out kinks (points where the
    difference quotients at ``h`` and ``10h`` disagree: the hard sigmoid's 0 and 1). A
    wrong ``rho_prime`` would make the nudge and every rule's gradient wrong together."""
    import torch

    rho = compile_expression(parse_expression(rho_code, f"{where}.rho"), f"{where}.rho")
    prime = compile_expression(parse_expression(prime_code, f"{where}.rho_prime"),
                               f"{where}.rho_prime")
    u = torch.linspace(-3.0, 3.0, 600, dtype=torch.float64) + 0.00123  # off round numbers
    with torch.no_grad():
        def rate(v: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(rho({**parameters, coupled: v}), dtype=torch.float64)

        slope = (rate(u + 1e-6) - rate(u - 1e-6)) / 2e-6
        wide = (rate(u + 1e-5) - rate(u - 1e-5)) / 2e-5
        given = torch.as_tensor(prime({**parameters, coupled: u}), dtype=torch.float64)
        given = given.expand_as(u)
    smooth = torch.isfinite(slope) & torch.isfinite(given) & (
        (slope - wide).abs() <= 1e-6 * (1 + slope.abs()))
    wrong = smooth & ((given - slope).abs() > 1e-5 * (1 + slope.abs()))
    if bool(wrong.any()):
        i = int(wrong.nonzero()[0])
        raise ModelError(f"{where}: rho_prime is not the derivative of rho: at {coupled} = "
                         f"{float(u[i]):.4g}, d rho/d{coupled} = {float(slope[i]):.6g} but "
                         f"rho_prime = {float(given[i]):.6g}")


def _parse_equations(code: str, where: str) -> list[StateEquation]:
    """Parse Brian2 equations; keep the differential equations, in file order."""
    import_brian2()
    from brian2 import Equations

    _check_equation_sizes(code, where)
    try:
        equations = Equations(code)
    except Exception as exc:
        raise ModelError(f"{where}: invalid Brian2 equations: {' '.join(str(exc).split())}"
                         ) from None
    state = []
    for variable in equations.ordered:
        if variable.type == "differential equation":
            rhs = variable.expr.code
            state.append(StateEquation(variable.varname, rhs,
                                       parse_expression(rhs, f"{where}: d{variable.varname}/dt")))
        elif variable.varname not in ENGINE_SYMBOLS and not variable.varname.startswith("I_syn_"):
            raise ModelError(f"{where}: only differential equations belong in 'equations' "
                             f"(found {variable.type} {variable.varname!r}); put constants "
                             "under [parameters]")
    if not state:
        raise ModelError(f"{where}: the equations declare no differential equation")
    return state


#: a unit as Brian2 accepts it (``1``, ``volt``, ``metre**2``, ``second**-1``) with small
#: exponents: Brian2 evaluates unit strings with Python; ``1 - 9**9**9**9`` must not reach it
_UNIT_FACTOR = r"[A-Za-z0-9]{1,20}(\s*\*\*\s*-?\d{1,2})?"
_SAFE_UNIT = re.compile(rf"^\s*{_UNIT_FACTOR}(\s*[*/]\s*{_UNIT_FACTOR})*\s*$")


def _check_equation_sizes(code: str, where: str) -> None:
    """Split equations with Brian2's grammar (no evaluation) and check each expression's
    size and each unit's form before Brian2 evaluates them."""
    import_brian2()
    from brian2.equations.equations import EQUATIONS

    if len(code) > 4 * MAX_EXPRESSION_CHARS:
        raise ModelError(f"{where}: 'equations' is {len(code):,} characters long; at most "
                         f"{4 * MAX_EXPRESSION_CHARS:,} are allowed")
    try:
        parsed = EQUATIONS.parse_string(code, parse_all=True)
    except Exception:
        return  # Brian2 reports the syntax error itself
    for equation in parsed:
        content = dict(equation.items())
        name = content.get("identifier", "?")
        if not _SAFE_UNIT.match(str(content.get("unit", "1"))):
            raise ModelError(f"{where}: the unit of {name!r} ({content.get('unit')!r}) is not "
                             "a Brian2 unit such as '1', 'volt' or 'metre**2'")
        if content.get("expression") is not None:
            check_expression(str(content["expression"]), f"{where}: {name}",
                             parsed_again=True)  # Brian2 names a syntax error itself
