"""Brian2 set-up shared by the Brian2 engines: code-generation target, a cache directory
the package controls, and the names the engines define (which a model may not use).

The Cython cache goes to ``$NEUROEQ_CACHE_DIR/brian2`` when that variable is set, else to
``<repository>/.cache/brian2`` in a source checkout, else to the user's cache directory
(``~/.cache/neuroeq/brian2``). Compiled extensions are reused across runs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from neuroeq.brian2_import import import_brian2
from neuroeq.errors import ConfigError, ModelError, NeuroEQError

if TYPE_CHECKING:
    import brian2
    import numpy as np

    from neuroeq.network import Network
    from neuroeq.neuron_model import NeuronModel

TARGETS = ("cython", "numpy")
T = TypeVar("T")
CACHE_ENV = "NEUROEQ_CACHE_DIR"
#: characters of a Brian2 error kept in neuroeq's message (its tracebacks run to pages)
MAX_MESSAGE = 600
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: built simulations an engine keeps (networks × batch sizes × nudge forms), the last used
KEPT_SIMULATIONS = 8
# GCC additions to Brian2's default flags (-O3 -ffast-math -fno-finite-math-only
# -march=native). glibc declares its vector math functions (libmvec: tanh, exp, sin, ...,
# within 4 ulp) only when __FAST_MATH__ is defined, which GCC leaves undefined under
# -fno-finite-math-only; defining it lets GCC vectorise a state update that calls them,
# while NaN and infinity keep their IEEE semantics. A state update reads and writes ten or
# more arrays, more than GCC's default 10 run-time aliasing checks allow it to vectorise.
# FHN 784-256-10, batch 256: the hidden layer's update 240 ms -> 47 ms per 300 steps.
GCC_VECTOR_FLAGS = ("-D__FAST_MATH__", "--param=vect-max-version-for-alias-checks=256")


def cache_directory() -> Path:
    """Where Brian2's compiled code is cached (created if missing)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        checkout = Path(__file__).resolve().parents[2]
        if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
            base = checkout / ".cache"
        else:
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neuroeq"
    path = base / "brian2"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Brian2's code cache {str(path)!r} cannot be created ({exc}); "
                          f"set {CACHE_ENV} to a writable directory") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"Brian2's code cache {str(path)!r} is not writable; set "
                          f"{CACHE_ENV} to a writable directory")
    return path


def configure_brian2(target: str = "cython") -> None:
    """Select the runtime code-generation target, point Brian2's cache at ours and add
    ``GCC_VECTOR_FLAGS`` to the compiler flags.

    Brian2's cache key is the generated code, not the flags: a module already compiled for
    the same code is reused as it is.
    """
    if target not in TARGETS:
        raise ConfigError(f"Brian2 target {target!r} must be one of {', '.join(TARGETS)}")
    import_brian2()
    from brian2 import prefs, set_device

    set_device("runtime")
    prefs.codegen.target = target
    prefs.codegen.runtime.cython.cache_dir = str(cache_directory())
    prefs.codegen.runtime.cython.multiprocess_safe = True
    prefs.logging.console_log_level = "WARNING"
    flags = list(prefs.codegen.cpp.extra_compile_args_gcc)
    prefs.codegen.cpp.extra_compile_args_gcc = flags + [f for f in GCC_VECTOR_FLAGS
                                                        if f not in flags]


# ------------------------------------------------------------ names the Brian2 engines define
@dataclass(frozen=True)
class EngineNames:
    """The names one Brian2 engine gives its groups and synapses, each with what it holds.

    ``fixed`` are the same for every model; ``per_projection`` are regular expressions of
    the names made per projection ``k``; ``per_variable`` and ``per_pair`` are templates
    filled with each state variable ``v`` and each pair ``(v, m)`` in file order. A model
    may use none of them as a parameter or state variable: Brian2 would read the engine's
    variable where the model meant its own.
    """

    label: str
    fixed: Mapping[str, str]
    per_projection: Mapping[str, str] = field(default_factory=dict)
    per_variable: Mapping[str, str] = field(default_factory=dict)
    per_pair: Mapping[str, str] = field(default_factory=dict)


#: names Brian2 gives every group, synapse and pathway the engines build
BRIAN2_NAMES = {
    "t": "Brian2's time", "dt": "Brian2's time step", "t_in_timesteps": "Brian2's step count",
    "i": "Brian2's neuron index", "j": "Brian2's postsynaptic index of a synapse",
    "N": "Brian2's group size", "N_incoming": "Brian2's count of a neuron's incoming synapses",
    "N_outgoing": "Brian2's count of a neuron's outgoing synapses",
    "delay": "Brian2's synaptic delay", "xi": "Brian2's white noise",
}
#: Brian2 reads ``xi_<name>`` in equations as white noise
NOISE = re.compile(r"xi_\w+")
#: a synapse reads a variable ``x`` of its pre- and postsynaptic neurons as ``x_pre``,
#: ``x_post``
SYNAPSE_SUFFIXES = ("_pre", "_post")
_SHARED = {
    "I_syn": "the synaptic input", "I_in": "the clamped input layer's current",
    "bias": "the neuron's bias", "rho": "the rate rho of the coupled variable",
    "nudge": "the output layer's nudging current", "w_syn": "a synapse's weight",
}
#: what each engine defines, under the engine's ``name``; the engines check a model's
#: parameters (:func:`check_parameter_names`) and what they build against it
#: (:func:`check_engine_names`)
ENGINE_NAMES = {
    "brian2": EngineNames(
        label="Brian2 engine",
        fixed={**_SHARED, "rho_prime": "rho' of the coupled variable",
               "rp_star": "AsymEP's rho' at the free state",
               "dcp": "AsymEP's rho'(s*)(c - c*)", "gd": "AsymEP's sum of g_v (v - v*)"},
        per_projection={r"I_e\d+": "the summed current of a projection",
                        r"D_e\d+": "AsymEP's summed rho'(s*)(c - c*) of a projection",
                        r"T_e\d+": "AsymEP's summed transposed correction of a projection"},
        per_variable={"{v}_star": "AsymEP's free-phase value of {v!r}",
                      "g_{v}": "AsymEP's dF_{v}/dI_syn",
                      "corr_{v}": "AsymEP's correction of d{v}/dt"},
        per_pair={"a_{v}_{m}": "AsymEP's within-neuron asymmetry of ({v!r}, {m!r})"}),
    "brian2_spiking": EngineNames(
        label="spiking engine",
        fixed={**_SHARED, "spk": "a neuron's spike in this step",
               "acc_r": "the accumulated spike count", "acc_u": "the accumulated membrane",
               "t_start": "the time statistics start at",
               "acc_c": "a synapse's accumulated coincidences"}),
}


def _engines(engine: str | None) -> list[EngineNames]:
    if engine is None:
        return list(ENGINE_NAMES.values())
    if engine not in ENGINE_NAMES:
        raise ConfigError(f"unknown Brian2 engine {engine!r}; known: {', '.join(ENGINE_NAMES)}")
    return [ENGINE_NAMES[engine]]


def engine_names(state_variables: Sequence[str], engine: str | None = None
                 ) -> dict[str, list[str]]:
    """The names that ``engine`` (``None``: every Brian2 engine) defines by name for a model
    with these state variables, each with what it holds: more than one meaning is a clash
    between them (:func:`engine_name_clashes`). Per-projection and synaptic names are
    patterns: :func:`engine_name_meaning` knows them too."""
    names: dict[str, list[str]] = {}
    for table in _engines(engine):
        for name, meaning in {**BRIAN2_NAMES, **table.fixed}.items():
            if meaning not in names.setdefault(name, []):
                names[name].append(meaning)
    generated: dict[str, list[str]] = {}
    for table in _engines(engine):
        for a, v in enumerate(state_variables):
            for template, meaning in table.per_variable.items():
                generated.setdefault(template.format(v=v), []).append(meaning.format(v=v))
            for m in state_variables[a + 1:]:
                for template, meaning in table.per_pair.items():
                    generated.setdefault(template.format(v=v, m=m), []).append(
                        meaning.format(v=v, m=m))
    for name, meanings in generated.items():
        names.setdefault(name, []).extend(meanings)
    return names


def engine_name_clashes(state_variables: Sequence[str]) -> dict[str, list[str]]:
    """Names that the Brian2 engines would make twice from these state variables (``g_m``
    and ``m_star`` both give ``g_m_star``; ``rp`` gives AsymEP's ``rp_star``)."""
    return {name: meanings for name, meanings in engine_names(state_variables).items()
            if len(meanings) > 1}


def _group_name_meaning(name: str, state_variables: Sequence[str], engine: str | None
                        ) -> str | None:
    """What a group of ``engine`` holds under ``name`` (``None``: nothing it defines)."""
    meanings = engine_names(state_variables, engine).get(name)
    if meanings:
        return meanings[0]
    for table in _engines(engine):
        for pattern, meaning in table.per_projection.items():
            if re.fullmatch(pattern, name):
                return meaning
    return BRIAN2_NAMES["xi"] if NOISE.fullmatch(name) else None


def engine_name_meaning(name: str, state_variables: Sequence[str], engine: str | None = None
                        ) -> str | None:
    """What the Brian2 engine ``engine`` (``None``: any) means by ``name`` in a model with
    these state variables: one of its variables, a synapse's view ``x_pre``/``x_post`` of
    a neuron's variable or state variable ``x``, or Brian2's own unit, function or constant
    (which Brian2 reads before a model's parameters); ``None`` where it is free."""
    meaning = _group_name_meaning(name, state_variables, engine)
    if meaning is not None:
        return meaning
    for suffix in SYNAPSE_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and (stem in state_variables
                             or _group_name_meaning(stem, state_variables, engine)):
            return f"a synapse's name for {stem!r} of its {suffix[1:]}synaptic neuron"
    return _brian2_default(name)


def _brian2_default(name: str) -> str | None:
    """``"Brian2's unit"`` (function, constant) where Brian2 defines ``name`` itself."""
    import_brian2()
    from brian2.core.namespace import DEFAULT_CONSTANTS, DEFAULT_FUNCTIONS, DEFAULT_UNITS

    for kind, names in (("constant", DEFAULT_CONSTANTS), ("unit", DEFAULT_UNITS),
                        ("function", DEFAULT_FUNCTIONS)):
        if name in names:
            return f"Brian2's {kind} {name!r}"
    return None


def check_parameter_names(model: NeuronModel, engine: str) -> None:
    """Refuse, before ``engine`` builds any Brian2 object, a parameter of ``model`` that is
    a name the engine defines (:func:`engine_name_meaning`), Brian2's own unit, function or
    constant, or one of the model's state variables: Brian2 would use that in place of the
    parameter, warning only (:class:`ModelError`). A model file was checked for every
    engine's names already; a model made or changed in code is checked here, before the
    build: objects built and then dropped make Brian2 warn that each "was never included in
    a network"."""
    label = ENGINE_NAMES[engine].label
    for name in model.parameters:
        meaning = "the model's state variable" if name in model.state_variables else \
            engine_name_meaning(name, model.state_variables, engine)
        if meaning is not None:
            raise ModelError(
                f"model {model.name!r}: parameter {name!r} is also {meaning} in the {label}; "
                "Brian2 would use that in place of the parameter: rename the parameter")


def check_engine_names(objects: Iterable[Any], model: NeuronModel, engine: str) -> None:
    """Check the Brian2 objects that ``engine`` built for ``model`` (and the pathways and
    operations they contain): every name they define must be the model's state variable or
    listed in :data:`ENGINE_NAMES`, else model files could use it (a neuroeq bug, raised as
    ``RuntimeError``). With :func:`check_parameter_names`, run before the build, no
    parameter is then one of their names."""
    label = ENGINE_NAMES[engine].label
    for obj in _with_contained(objects):
        for name in getattr(obj, "variables", None) or {}:
            if not name.startswith("_") and name not in model.state_variables \
                    and engine_name_meaning(name, model.state_variables, engine) is None:
                raise RuntimeError(
                    f"the {label} defines {name!r} in {obj.name!r}, which ENGINE_NAMES in "
                    "neuroeq/engines/brian2_common.py does not list; list it there, so that "
                    "model files cannot use the name")


def _with_contained(objects: Iterable[Any]) -> Iterator[Any]:
    """``objects`` and, recursively, the objects each contains."""
    for obj in objects:
        yield obj
        yield from _with_contained(getattr(obj, "contained_objects", ()))


# ----------------------------------------------------------------- helpers shared by the engines
def model_namespace(model: NeuronModel) -> dict:
    """The model's parameters as Brian2 quantities (``tau`` in ``ms`` becomes ``1*ms``)."""
    import brian2.units as units
    from brian2 import Quantity

    namespace = {}
    for name, value in model.parameters.items():
        unit = model.parameter_units.get(name, "1")
        dim = getattr(units, unit).dim if unit not in ("", "1") else None
        namespace[name] = Quantity(value, dim=dim) if dim is not None else float(value)
    return namespace


def check_dimensionless(model: NeuronModel) -> None:
    """The Brian2 engines add currents in ``1/second`` to each equation: they need
    dimensionless state variables (every model in ``models/`` has them) and one coupling
    channel."""
    from brian2 import Equations

    from neuroeq.errors import ModelError

    if model.channels:
        raise ModelError(f"model {model.name!r}: the Brian2 engines carry one coupling channel "
                         f"(rho); extra channels {sorted(model.channels)} need TorchEngine")
    equations = Equations(model.equations_code)
    for variable in model.state_variables:
        if not equations[variable].dim.is_dimensionless:
            raise ModelError(f"model {model.name!r}: state variable {variable!r} has unit "
                             f"{equations[variable].dim}; the Brian2 engines need dimensionless "
                             "state variables (write the equation in units of a scale parameter)")


def block_diagonal(batch: int, n_pre: int, n_post: int, exclude_diagonal: bool = False,
                   interleave: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synapse indices of ``batch`` block-diagonal copies of a dense ``n_post × n_pre``
    projection.

    With ``interleave = 1`` they are ordered (copy, post, pre), like ``matrix.reshape(-1)``
    tiled per copy. With ``interleave = G`` the copies go in groups of ``G`` (the last one
    may be shorter), ordered (group, post, pre, copy in the group): consecutive synapses then
    target different neurons, so a summed variable's scatter-add has no chain of dependent
    additions to one address; each target still sums its synapses in the same order.

    Returns ``(pre_index, post_index, keep, weight_index)``: ``keep`` masks the flattened
    matrix (the diagonal is left out of lateral projections) and synapse ``k`` carries
    ``matrix.reshape(-1)[keep][weight_index[k]]``.
    """
    import numpy as np

    post, pre = np.meshgrid(np.arange(n_post), np.arange(n_pre), indexing="ij")
    keep = np.ones((n_post, n_pre), dtype=bool)
    if exclude_diagonal:
        keep &= post != pre
    pre, post = pre[keep], post[keep]
    pairs = np.arange(pre.size)
    group = max(int(interleave), 1)
    pre_parts, post_parts, weight_parts = [], [], []
    for first in range(0, batch, group):
        copies = np.arange(first, min(first + group, batch))[None, :]
        pre_parts.append((copies * n_pre + pre[:, None]).reshape(-1))
        post_parts.append((copies * n_post + post[:, None]).reshape(-1))
        weight_parts.append(np.repeat(pairs, copies.size))
    return (np.concatenate(pre_parts), np.concatenate(post_parts), keep.reshape(-1),
            np.concatenate(weight_parts))


def recent_simulation(cache: dict, key: tuple, network: Network,
                      build: Callable[[], T]) -> tuple[T, bool]:
    """The simulation kept in ``cache`` under ``key`` for ``network``, else ``build()``'s
    (and whether it was built). ``cache`` keeps the :data:`KEPT_SIMULATIONS` used last, so
    that a loop over networks (gradcheck over models and seeds) does not keep every
    network and its Brian2 objects alive."""
    simulation = cache.pop(key, None)
    built = simulation is None or simulation.network is not network
    if built:
        simulation = build()
    cache[key] = simulation  # the most recently used last
    while len(cache) > KEPT_SIMULATIONS:
        cache.pop(next(iter(cache)))
    return simulation, built


#: the logger of Brian2's warning that a name means two things, a variable of the group
#: and a unit, function or namespace entry (``Group._resolve``), of which it uses one
NAME_CLASH_LOGGER = "brian2.groups.group.Group.resolve.resolution_conflict"


class _NameClashes(logging.Filter):
    """Keeps Brian2's name-clash warnings (and lets Brian2 log them again next time: it
    logs each message once per process)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        from brian2.utils.logger import BrianLogger

        self.messages.append(" ".join(record.getMessage().split()))
        getattr(BrianLogger, "_log_messages", set()).discard(
            (record.name, "WARNING", record.msg))
        return False


@contextmanager
def brian2_errors(what: str) -> Iterator[None]:
    """Brian2's errors while building or running ``what`` (a model, named) as one
    :class:`ModelError` (the original chained), since they mean that Brian2 refused the
    model's code; neuroeq's own errors, even when Brian2 wraps them, pass as they are.
    Brian2's warning that a name means two things (it then uses one of them, perhaps not
    the model's) is a :class:`ModelError` too."""
    clashes = _NameClashes()
    logger = logging.getLogger(NAME_CLASH_LOGGER)
    logger.addFilter(clashes)
    try:
        with _brian2_refusals(what):
            yield
    finally:
        logger.removeFilter(clashes)
    if clashes.messages:
        raise ModelError(f"{what}: a name means two things to Brian2 "
                         f"({clashes.messages[0][:MAX_MESSAGE]}); rename the model's parameter "
                         "or state variable")


@contextmanager
def _brian2_refusals(what: str) -> Iterator[None]:
    """Brian2's exceptions as :class:`ModelError` (:func:`brian2_errors`)."""
    try:
        yield
    except (NeuroEQError, MemoryError):
        raise
    except Exception as error:
        cause = error
        while cause is not None and not isinstance(cause, NeuroEQError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        innermost = error  # Brian2 wraps the error that names the problem in its own
        while innermost.__cause__ is not None:
            innermost = innermost.__cause__
        if isinstance(innermost, MemoryError) or _raised_in_neuroeq(innermost) \
                or "out of memory" in str(innermost) or "can't allocate" in str(innermost):
            raise  # not Brian2 refusing the model: memory, or neuroeq's own callbacks
        message = " ".join(str(innermost).split())
        raise ModelError(f"{what}: Brian2 refused it ({type(innermost).__name__}: "
                         f"{message[:MAX_MESSAGE]})") from error


def _raised_in_neuroeq(error: BaseException) -> bool:
    """Whether ``error`` was raised in neuroeq's own code (the last frame of its
    traceback), such as a nudge refreshed from torch during a Brian2 run."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def run_steps(net: brian2.Network, steps: int, dt: float) -> None:
    """Run a Brian2 ``Network`` for ``steps`` steps of ``dt`` seconds in one ``run()``, and
    keep its code objects for the next (:func:`keep_code_objects`).

    ``Network.run`` starts with a full ``gc.collect()`` (to warn about objects left out of
    the magic network, which neuroeq does not use); with torch and sympy loaded it costs
    ~1 s, so the existing objects are frozen out of the collection for the call.
    """
    import gc

    import brian2

    gc.freeze()
    try:
        net.run(steps * dt * brian2.second, namespace={})
    finally:
        gc.unfreeze()
    keep_code_objects(net)


def keep_code_objects(net: brian2.Network) -> None:
    """Let later ``run()`` calls of ``net`` reuse the code objects of its last run.

    Brian2's runtime device generates every code object again at each ``run()`` (~2-8 ms
    each: ~35 ms per ``run()`` for a two-layer spiking network, more than its 250 steps at
    batch 16). A network whose equations, namespace and array sizes stay fixed, and whose
    values change only through its state variables (every simulation of neuroeq's Brian2
    engines), can keep them: each object's ``create_code_objects`` becomes a no-op, its
    ``code_objects`` keep the last ones (held by the objects themselves), and the rest of
    ``before_run`` (unit checks, spike-queue preparation) still runs. Call it after a
    ``run()``; calling it again changes nothing.
    """
    for obj in net.sorted_objects:
        if getattr(obj, "code_objects", None) and hasattr(obj, "create_code_objects"):
            obj.create_code_objects = _no_new_code_objects


def _no_new_code_objects(run_namespace: dict[str, Any]) -> None:
    return None
