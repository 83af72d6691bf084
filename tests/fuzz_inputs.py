"""Hypothesis strategies for malformed and hostile protocol and model files.

Shared by ``tests/test_fuzz.py`` (a few hundred files in CI) and ``bench/fuzz.py`` (the long
run). Each strategy draws the *bytes of a file*: mostly a valid file with a few hostile
mutations (wrong types, missing or unknown keys, unknown rules and sections, negative and
huge sizes, NaN/inf numbers, broken Brian2 equations, unit errors, code in strings, very
long strings, deep nesting), sometimes random TOML-like text or bytes that are not UTF-8.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import strategies as st

#: a file containing this text (with ``{marker}`` filled in) must never create the marker
INJECTIONS = (
    "__import__('os').system('touch {marker}')",
    "exec(\"open('{marker}', 'w').close()\")",
    "eval(\"__import__('pathlib').Path('{marker}').touch()\")",
    "().__class__.__base__.__subclasses__()",
    "open('{marker}', 'w')",
)

BASE_PROTOCOL: dict[str, Any] = {
    "protocol": {"name": "fuzz", "kind": "train"},
    "model": {"name": "hopfield", "parameters": {}},
    "network": {"sizes": [4, 3, 2], "coupling": "symmetric", "seed": 0},
    "engine": {"free_steps": 3, "nudged_steps": 2, "tol": 0.0},
    "rule": {"name": "centered", "beta": 0.5},
    "data": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 8, "lr": 0.1, "limit_train": 16, "limit_test": 8},
    "outputs": {"figures": False, "state_samples": 0},
}

BASE_MODEL: dict[str, Any] = {
    "name": "fuzz_fhn",
    "structural_class": "skew_gradient",
    "coupled_variable": "v",
    "time_constant": "tau",
    "equations": "dv/dt = (v - v**3/3 - w + rho_prime*(I_syn + bias)) / tau : 1\n"
                 "dw/dt = eps*(v + a - b*w) / tau : 1\n",
    "rho": "0.5*(1 + tanh(v))",
    "rho_prime": "0.5*(1 - tanh(v)**2)",
    "energy": "-(v**2/2 - v**4/12) + v*w - (b/2)*w**2 + a*w",
    "Q": {"v": "1", "w": "-eps"},
    "initial": {"v": -1.0, "w": -0.6},
    "parameters": {"a": {"value": 0.7}, "b": {"value": 0.5}, "eps": {"value": 6.0},
                   "tau": {"value": 1.0, "unit": "ms"}},
    "integration": {"dt": {"value": 0.1, "unit": "ms"}, "max_steps": 50, "tol": 1e-6},
}

#: equation strings that are wrong in one way or another (or hostile)
BAD_EQUATIONS = (
    "dv/dt = (v - w / tau : 1\n dw/dt = -w/tau : 1",          # syntax
    "dv/dt = -v/tau : volt\ndw/dt = -w/tau : 1",               # unit of v, not dimensionless
    "dv/dt = -v/tau : 1\ndw/dt = -w/tau : furlong",            # unknown unit
    "dv/dt = -v/tau : 1\ndw/dt = -w/tau : 1 - 9**9**9**9",     # power tower in the unit
    "dv/dt = 9**9**9**9 * v/tau : 1\ndw/dt = -w/tau : 1",      # power tower in the rhs
    "dv/dt = v**(9**99) / tau : 1\ndw/dt = -w/tau : 1",
    "dv/dt = foo(v)/tau : 1\ndw/dt = -w/tau : 1",              # unknown function
    "dv/dt = -v/tau + undefined_name : 1\ndw/dt = -w/tau : 1",
    "dv/dt = -v/tau : 1\ndv/dt = -v/tau : 1",                  # duplicate
    "v = 3 : 1",                                               # no differential equation
    "dv/dt = -v/tau : 1 (unknownflag)\ndw/dt = -w/tau : 1",
    "dv/dt = 1/0 : 1\ndw/dt = -w/tau : 1",
    "dv/dt = 1e999 * v : 1\ndw/dt = -w/tau : 1",
    "dv/dt = v.__class__ : 1\ndw/dt = -w/tau : 1",
    "dv/dt = [v for v in ()] : 1\ndw/dt = -w/tau : 1",
    "dv/dt = lambda: 0 : 1\ndw/dt = -w/tau : 1",
    "dv/dt = " + "(" * 300 + "v" + ")" * 300 + " : 1\ndw/dt = -w/tau : 1",
    "dv/dt = " + "+".join(["v"] * 3000) + " : 1\ndw/dt = -w/tau : 1",
    "dv/dt = " + "-" * 5000 + "v : 1\ndw/dt = -w/tau : 1",
    "dI_syn/dt = -I_syn/tau : 1",
    "",
)

BAD_EXPRESSIONS = (
    "", " ", "tanh(", "v +", "9**9**9**9", "(9**999)**999", "1/0", "1e400", "v if v else 0",
    "v[0]", "v.real", "'text'", "foo(v)", "v; import os", "v = 1", "x_undefined",
    "exp(exp(exp(1000.0)))", "clip(v)", "int()", "tanh(v, v)", "v " * 5000,
    *INJECTIONS,
)

UNITS = ("1", "", "ms", "mV", "Hz", "volt", "furlong", "metre**2", "1/second", "second**-1",
         "__class__", "ms ms", "9**9**9", "nA*Mohm", "kilogram", "boolean", "\u00b5s")


def _finite_or_not() -> st.SearchStrategy:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0,
                                      -0.0, 5e-324]))


def hostile_values(marker: str = "FUZZ_MARKER") -> st.SearchStrategy:
    """Any TOML value, biased toward the troublesome ones."""
    scalars = st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([0, -1, -(2**63), 2**63 - 1, 10**9, 100_000, 100_001]),
        _finite_or_not(),
        st.booleans(),
        st.text(max_size=20),
        st.sampled_from(["ep", "centered", "nope", "torch", "brian2", "hopfield", "fhn",
                         "../../etc/passwd", "/dev/zero", "models/fhn.toml", "x" * 100_000,
                         "\x00", "\u202e", *(s.format(marker=marker) for s in INJECTIONS),
                         *BAD_EXPRESSIONS[:10]]),
        st.datetimes(), st.dates(), st.times(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=6)


def _deep_table(depth: int) -> dict[str, Any]:
    table: dict[str, Any] = {"x": 1}
    for _ in range(depth):
        table = {"t": table}
    return table


def _dump(data: dict[str, Any]) -> bytes:
    try:
        return tomli_w.dumps(data).encode()
    except (TypeError, ValueError):  # tomli_w refuses some shapes; fall back to a repr
        return repr(data).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any], keys: dict[str, list[str]],
             marker: str) -> dict[str, Any]:
    """``base`` with 1 to 4 mutations: set, delete, retype, nest, add unknown keys."""
    data = copy.deepcopy(base)
    sections = [*keys, "unknown_section", "sweep"]
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "set", "set", "delete", "table", "deep",
                                       "unknown_key", "top"]))
        section = draw(st.sampled_from(sections))
        key = draw(st.sampled_from(keys.get(section, ["x"]) + ["unknown_key"]))
        if action == "set":
            target = data.setdefault(section, {}) if section != "" else data
            if isinstance(target, dict):
                target[key] = draw(hostile_values(marker))
            else:
                data[section] = draw(hostile_values(marker))
        elif action == "delete":
            if draw(st.booleans()):
                data.pop(section, None)
            elif isinstance(data.get(section), dict):
                data[section].pop(key, None)
        elif action == "table":
            data[section] = draw(hostile_values(marker))
        elif action == "deep":
            data[section] = _deep_table(draw(st.integers(10, 400)))
        elif action == "unknown_key":
            data[draw(st.text(min_size=1, max_size=30))] = draw(hostile_values(marker))
        else:
            data = {"protocol": draw(hostile_values(marker))} if draw(st.booleans()) else {}
    return data


PROTOCOL_KEYS: dict[str, list[str]] = {
    "protocol": ["name", "kind", "description"],
    "model": ["name", "parameters"],
    "network": ["sizes", "coupling", "alpha", "gain", "dtype", "seed", "readout", "cost"],
    "engine": ["name", "dt_ms", "free_steps", "nudged_steps", "tol", "solver", "target"],
    "rule": ["name", "beta", "random_sign"],
    "data": ["name", "root"],
    "training": ["epochs", "batch_size", "lr", "lr_decay", "on_nonconvergence", "seed",
                 "limit_train", "checkpoint_every"],
    "gradcheck": ["sizes", "rules", "betas", "models"],
    "stochastic": ["sizes", "windows", "replicas"],
    "outputs": ["figures", "state_samples", "dpi"],
}

MODEL_KEYS: dict[str, list[str]] = {
    # "" stands for the top level of the model file
    "": ["name", "structural_class", "coupled_variable", "time_constant", "equations", "rho",
         "rho_prime", "energy", "Q", "initial", "bounds", "parameters", "integration",
         "channels", "spiking", "title"],
    "parameters": ["a", "b", "eps", "tau", "new"],
    "initial": ["v", "w", "z"],
    "bounds": ["v", "w"],
    "Q": ["v", "w", "z"],
    "integration": ["dt", "max_steps", "tol"],
    "channels": ["sin", "bad name"],
}


@st.composite
def _model_mutation(draw: st.DrawFn, marker: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE_MODEL)
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.sampled_from(["equations", "expression", "parameter", "unit",
                                       "top", "table", "missing"]))
        if choice == "equations":
            data["equations"] = draw(st.sampled_from(BAD_EQUATIONS)).replace(
                "{marker}", marker)
        elif choice == "expression":
            field = draw(st.sampled_from(["rho", "rho_prime", "energy"]))
            data[field] = draw(st.sampled_from(BAD_EXPRESSIONS)).format(marker=marker)
        elif choice == "parameter":
            name = draw(st.sampled_from(MODEL_KEYS["parameters"]))
            if not isinstance(data.get("parameters"), dict):
                data["parameters"] = {}
            data["parameters"][name] = draw(st.one_of(
                _finite_or_not(), hostile_values(marker),
                st.fixed_dictionaries({"value": _finite_or_not()},
                                      optional={"unit": st.sampled_from(UNITS)})))
        elif choice == "unit":
            name = draw(st.sampled_from(["tau", "a"]))
            if not isinstance(data.get("parameters"), dict):
                data["parameters"] = {}
            data["parameters"][name] = {"value": draw(_finite_or_not()),
                                        "unit": draw(st.one_of(st.sampled_from(UNITS),
                                                               st.text(max_size=12)))}
        elif choice == "top":
            key = draw(st.sampled_from(MODEL_KEYS[""] + ["unknown"]))
            data[key] = draw(hostile_values(marker))
        elif choice == "table":
            section = draw(st.sampled_from([k for k in MODEL_KEYS if k]))
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                key = draw(st.sampled_from(MODEL_KEYS[section]))
                table[key] = draw(hostile_values(marker))
        else:
            data.pop(draw(st.sampled_from(MODEL_KEYS[""])), None)
    return data


def _raw_files() -> st.SearchStrategy[bytes]:
    """Text and bytes that are barely (or not at all) TOML."""
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.sampled_from([
            b"\xff\xfe\x00\x00", b"name = \"\xc3\x28\"", b"a = " + b"[" * 5000 + b"]" * 5000,
            b"a = " + b"{b = " * 2000 + b"1" + b"}" * 2000,
            b"[" + b".".join([b"t"] * 3000) + b"]\nx = 1",
            b"x = \"" + b"y" * 200_000 + b"\"", b"[protocol]\nname = 'x'\nkind = 'train'\n[[",
            b"[protocol]\r\nname = \"x\"\r\nkind = \"train\"\x00",
        ]),
        st.lists(st.sampled_from(["[protocol]", "name = \"x\"", "kind = \"train\"", "[model]",
                                  "[network]", "sizes = [1, -2]", "a.b.c = 1", "= 1", "x = ",
                                  "[[rule]]", "x = nan", "x = inf", "x = 1979-05-27"]),
                 max_size=12).map(lambda lines: "\n".join(lines).encode()),
    )


def protocol_files(marker: str = "FUZZ_MARKER") -> st.SearchStrategy[bytes]:
    """The bytes of a malformed (occasionally valid) protocol file."""
    return st.one_of(
        _mutated(BASE_PROTOCOL, PROTOCOL_KEYS, marker).map(_dump),
        _mutated(BASE_PROTOCOL, PROTOCOL_KEYS, marker).map(_dump),
        _raw_files(),
    )


def model_files(marker: str = "FUZZ_MARKER") -> st.SearchStrategy[bytes]:
    """The bytes of a malformed (occasionally valid) model file."""
    return st.one_of(_model_mutation(marker).map(_dump), _model_mutation(marker).map(_dump),
                     _raw_files())


# --------------------------------------------------------------------------- checks
def _one_error_line(stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and ": error:" in lines[0]


def check_protocol_file(content: bytes, workdir: Path) -> str:
    """Run one protocol file through ``neuroeq run`` (into an existing result folder, so that
    a valid protocol is refused before it runs) and through the object builders.

    Returns ``"rejected"`` (a clean :class:`NeuroEQError`) or ``"valid"``; any other
    exception, exit status or a multi-line error is a failure (``AssertionError``).
    """
    from neuroeq.cli import main
    from neuroeq.errors import NeuroEQError
    from neuroeq.protocols import build, load_protocol

    path = workdir / "protocol.toml"
    path.write_bytes(content)
    existing = workdir / "existing_result"
    existing.mkdir(exist_ok=True)
    (existing / "protocol.toml").write_text("# resolved from an earlier run\n")
    (existing / "log.txt").touch()
    (existing / "DONE").write_text("1.0 s\n")  # a finished run: refused without --force
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        status = main(["run", str(path), "--out", str(existing), "--quiet"])
    assert status == 2, f"exit status {status} for {content[:300]!r}"
    assert _one_error_line(stderr.getvalue()), f"not one error line: {stderr.getvalue()!r}"
    try:
        protocol = load_protocol(path)
    except NeuroEQError:
        return "rejected"
    assert "exists" in stderr.getvalue(), stderr.getvalue()
    config = protocol.config
    if protocol.kind != "train":
        return "valid"
    try:
        model = build.build_model(config)
        engine = build.build_engine(config)
        build.build_rule(config, model, engine)
        sizes = config["network"]["sizes"]
        if sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)) <= 10_000:
            build.build_network(config, model)
    except NeuroEQError:
        return "rejected"
    return "valid"


def check_model_file(content: bytes, workdir: Path) -> str:
    """Load one model file; a rejected one must also make ``neuroeq classify`` exit 2 with
    one error line; an accepted one must build a small network and take a few steps.

    Returns ``"rejected"`` or ``"valid"``; anything else fails (``AssertionError``).
    """
    import torch

    from neuroeq.cli import main
    from neuroeq.engines.torch_engine import TorchEngine
    from neuroeq.errors import NeuroEQError
    from neuroeq.network import Network
    from neuroeq.neuron_model import load_model

    path = workdir / "model.toml"
    path.write_bytes(content)
    try:
        model = load_model(path)
    except NeuroEQError:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = main(["classify", str(path)])
        assert status == 2, f"exit status {status} for {content[:300]!r}"
        assert _one_error_line(stderr.getvalue()), f"not one error line: {stderr.getvalue()!r}"
        return "rejected"
    try:
        network = Network(model, (3, 2, 2), seed=0)
        with torch.no_grad():
            TorchEngine(max_steps=3, tol=0.0, on_failure="ignore").relax(
                network, torch.full((2, 3), 0.5, dtype=network.dtype))
    except NeuroEQError:
        return "rejected"
    return "valid"
