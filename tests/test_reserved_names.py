"""Names the Brian2 engines define: a model file may not use them (Brian2 would read the
engine's variable in place of the model's parameter), and the engines define no name that
``brian2_common.ENGINE_NAMES`` leaves out."""

import dataclasses
import re

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines import brian2_common, brian2_engine
from neuroeq.engines.brian2_common import BRIAN2_NAMES, ENGINE_NAMES, configure_brian2
from neuroeq.engines.brian2_engine import Brian2Engine
from neuroeq.engines.brian2_spiking import SpikingEngine
from neuroeq.errors import ModelError
from neuroeq.neuron_model import find_model_file, load_model, model_from_dict
from neuroeq.toml_data import read_toml

#: two state variables, so that the per-pair names (``a_u_w``) exist
TWO = {
    "name": "two", "structural_class": "general", "coupled_variable": "u",
    "time_constant": "tau",
    "equations": "du/dt = (-u + w + I_syn + bias)/tau : 1\ndw/dt = (u - w)/tau : 1",
    "rho": "clip(u, 0, 1)", "rho_prime": "int(u >= 0 and u <= 1)",
    "parameters": {"tau": {"value": 2.0, "unit": "ms"}},
}


def _listed_names() -> list[str]:
    """Every name ``ENGINE_NAMES`` and ``BRIAN2_NAMES`` list, made for ``TWO``'s ``u``, ``w``
    and projection 7, with synaptic (``_pre``, ``_post``) and Brian2 examples."""
    names = set(BRIAN2_NAMES)
    for table in ENGINE_NAMES.values():
        names |= set(table.fixed)
        names |= {pattern.replace(r"\d+", "7") for pattern in table.per_projection}
        names |= {t.format(v=v) for t in table.per_variable for v in ("u", "w")}
        names |= {t.format(v="u", m="w") for t in table.per_pair}
    return sorted(names | {"u_pre", "w_post", "rho_pre", "I_e3_post", "N_pre", "xi_1",
                           "ms", "Hz", "exp", "clip", "pi", "e"})


def _with_parameter(data: dict, name: str) -> dict:
    return {**data, "parameters": {**data["parameters"], name: 0.3}}


@pytest.mark.parametrize("name", _listed_names())
def test_a_parameter_named_as_the_engines_define_is_refused(name):
    with pytest.raises(ModelError, match=rf"model 'two' \(two.toml\): parameter name "
                                         rf"'{re.escape(name)}' .*engines"):
        model_from_dict(_with_parameter(TWO, name), source="two.toml")


@pytest.mark.parametrize("equations, message", [
    ("dnudge/dt = (-nudge + I_syn + bias)/tau : 1", "state variable name 'nudge' is reserved"),
    ("du/dt = (-u + I_syn + bias)/tau : 1\ndg_u/dt = -g_u/tau : 1",
     r"state variable name 'g_u' is reserved: the Brian2 engines use it for AsymEP's dF_u/dI_syn"),
    ("du/dt = (-u + I_syn + bias)/tau : 1\ndu_star/dt = -u_star/tau : 1",
     "state variable name 'u_star' is reserved"),
    ("du/dt = (-u + I_syn + bias)/tau : 1\ndrp/dt = -rp/tau : 1",
     r"give the Brian2 engines the name 'rp_star' twice \(AsymEP's rho' at the free state; "
     r"AsymEP's free-phase value of 'rp'\)"),
    ("du/dt = (-u + I_syn + bias)/tau : 1\ndg_m/dt = -g_m/tau : 1\ndm_star/dt = -m_star/tau : 1",
     "the name 'g_m_star' twice"),
])
def test_state_variables_the_engines_define_or_make_twice_are_refused(equations, message):
    data = {**TWO, "equations": equations, "coupled_variable": equations[1:].split("/")[0]}
    with pytest.raises(ModelError, match=message):
        model_from_dict(data, source="two.toml")


@pytest.mark.parametrize("name", ["I_input", "g_K", "x_star", "corr", "tau_pre", "spike",
                                  "nudge_gain", "a_u", "I_e", "xi"[:1], "msec_scale"])
def test_names_the_engines_leave_free_are_accepted(name):
    assert name in model_from_dict(_with_parameter(TWO, name)).parameters


def _model_data(name: str) -> dict:
    return read_toml(find_model_file(name), "model", ModelError)


def _defined_names(objects) -> set[str]:
    """The public names that Brian2 objects (and what they contain) define."""
    names = set()
    for obj in brian2_common._with_contained(objects):
        names |= {n for n in getattr(obj, "variables", None) or {} if not n.startswith("_")}
    return names


def _built(kind: str):
    """(model file data, the Brian2 objects of a tiny network of it, on target numpy)."""
    configure_brian2("numpy")
    if kind == "spiking":
        network = Network("spiking_rate", (3, 3, 2), seed=0)
        simulation = SpikingEngine(target="numpy").simulation(network, 2)
        return _model_data("spiking_rate"), [*simulation.net.objects]
    model, asym = {"relax": ("fhn", False), "asym": ("fhn", True),
                   "bounded": ("hopfield", False)}[kind]
    network = Network(model, (3, 3, 2), lateral=True, seed=0)
    simulation = Brian2Engine(target="numpy").simulation(network, 2, asym=asym)
    return _model_data(model), simulation.objects()


@pytest.mark.brian2
@pytest.mark.parametrize("kind", ["relax", "asym", "bounded", "spiking"])
def test_every_name_an_engine_creates_is_refused_in_a_model_file(kind):
    """Built, not listed: a variable added to an engine and left out of ``ENGINE_NAMES``
    fails here (a model file could use it, and Brian2 would read the engine's)."""
    data, objects = _built(kind)
    state = set(load_model(data["name"]).state_variables)
    created = _defined_names(objects) - state
    assert {"I_in", "w_syn", "t", "N"} <= created
    accepted = []
    for name in sorted(created):
        try:
            model_from_dict(_with_parameter(data, name))
        except ModelError as error:
            assert f"parameter name {name!r}" in str(error)
        else:
            accepted.append(name)
    assert accepted == []


@pytest.mark.brian2
@pytest.mark.parametrize("engine, kind, left_out", [("brian2", "asym", "gd"),
                                                   ("brian2_spiking", "spiking", "acc_r")])
def test_an_engine_variable_left_out_of_the_list_stops_the_build(monkeypatch, engine, kind,
                                                                 left_out):
    table = ENGINE_NAMES[engine]
    fixed = {k: v for k, v in table.fixed.items() if k != left_out}
    monkeypatch.setitem(ENGINE_NAMES, engine, dataclasses.replace(table, fixed=fixed))
    with pytest.raises(RuntimeError, match=rf"defines '{left_out}' in 'neuroeq_.*ENGINE_NAMES"):
        _built(kind)


def _hopfield_smooth_with(name: str) -> dict:
    data = _model_data("hopfield_smooth")
    data["equations"] = f"ds/dt = (-s + rho_prime*(I_syn + bias) + {name})/tau : 1"
    return _with_parameter(data, name)


@pytest.mark.brian2
def test_a_parameter_near_the_engines_names_keeps_its_own_value():
    """``I_drive`` next to the engine's ``I_in``: the Brian2 states are torch's."""
    network = Network(model_from_dict(_hopfield_smooth_with("I_drive")), (3, 3, 2), seed=0)
    x = torch.rand(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = TorchEngine(tol=0.0, max_steps=400).relax(network, x).state
    found = Brian2Engine(target="numpy", tol=0.0, max_steps=400, check_every=400).relax(
        network, x).state
    assert float((found - expected).abs().max()) <= 1e-12


def _bypassing_the_file_check(name: str):
    """A network whose model got parameter ``name`` after loading (no file check)."""
    model = load_model("hopfield_smooth")
    model = dataclasses.replace(model, parameters={**model.parameters, name: 0.3},
                                parameter_units={**model.parameter_units, name: "1"})
    return Network(model, (3, 3, 2), seed=0)


@pytest.mark.brian2
@pytest.mark.parametrize("name, message", [
    ("I_in", r"parameter 'I_in' is also the clamped input layer's current in the Brian2 "
             r"engine; Brian2 would use that"),
    ("e", r"parameter 'e' is also Brian2's constant 'e' in the Brian2 engine"),
])
def test_the_engine_refuses_a_parameter_its_objects_define(name, message):
    network = _bypassing_the_file_check(name)
    with pytest.raises(ModelError, match=message):
        Brian2Engine(target="numpy", max_steps=10, check_every=10).relax(
            network, torch.rand(2, 3, dtype=torch.float64))


@pytest.mark.brian2
def test_brian2s_name_clash_warning_is_an_error(monkeypatch):
    """Past the engine's own check: Brian2's warning, which it logs once per process, is a
    ``ModelError`` every time."""
    monkeypatch.setattr(brian2_engine, "check_parameter_names", lambda *args: None)
    for _ in range(2):
        network = _bypassing_the_file_check("I_in")
        with pytest.raises(ModelError, match=r"a name means two things to Brian2 \('I_in' is "
                                             "an internal variable of group"):
            Brian2Engine(target="numpy", max_steps=10, check_every=10).relax(
                network, torch.rand(2, 3, dtype=torch.float64))
