"""Model files: the shipped zoo loads, and bad files give one clear error naming the key."""

import math

import pytest

from neuroeq.errors import ModelError
from neuroeq.neuron_model import available_models, load_model, model_from_dict

GOOD = {
    "name": "toy", "structural_class": "general", "coupled_variable": "u",
    "time_constant": "tau", "equations": "du/dt = (-u + I_syn + bias)/tau : 1",
    "rho": "clip(u, 0, 1)", "rho_prime": "int(u >= 0 and u <= 1)",
    "parameters": {"tau": {"value": 2.0, "unit": "ms"}},
}


def test_zoo_loads_with_expected_classes():
    assert {"hopfield", "hopfield_smooth", "fhn", "spiking_rate"} <= set(available_models())
    fhn = load_model("fhn")
    assert fhn.structural_class == "skew_gradient"
    assert fhn.state_variables == ("v", "w")
    assert fhn.q_values() == {"v": 1.0, "w": -6.0}
    assert load_model("hopfield").structural_class == "gradient"
    assert load_model("spiking_rate").structural_class == "general"


@pytest.mark.parametrize("name", available_models())
def test_every_shipped_model_loads(name):
    assert load_model(name).name == name


def test_energy_may_use_state_variables_and_parameters():
    data = {**GOOD, "equations": "du/dt = (-u + w + I_syn + bias)/tau : 1\n"
                                 "dw/dt = -w/tau : 1",
            "energy": "u**2/2 + u*w/tau"}
    assert model_from_dict(data).energy_code == "u**2/2 + u*w/tau"


def test_units_are_converted_to_si():
    model = model_from_dict(GOOD)
    assert math.isclose(model.tau, 2e-3)


@pytest.mark.parametrize("change, message", [
    ({"structural_class": "chaotic"}, "structural_class"),
    ({"rho_prime": "1"}, r"rho_prime is not the derivative of rho: at u = -2\.999, d rho/du "
                         "= 0 but rho_prime = 1"),
    ({"rho": "tanh(u)", "rho_prime": "2*(1 - tanh(u)**2)"}, "rho_prime is not the derivative"),
    ({"parameters": {"tau": 1.0, "bias": 0.5}}, "parameter name 'bias' must be a plain"),
    ({"parameters": {"tau": 1.0, "t": 0.5}}, "parameter name 't' must be"),
    ({"parameters": {"tau": 1.0, "I_syn_x": 0.5}}, "parameter name 'I_syn_x' must be"),
    ({"parameters": {"tau": 1.0, "α": 0.5}}, "parameter name 'α' must be a plain identifier"),
    ({"parameters": {"tau": 10 ** 400}}, "must be finite"),
    ({"parameters": {"tau": {"value": 2.0, "unit": "mV"}}},
     r"time constant 'tau' has unit 'mV', which is not a time"),
    ({"integration": {"dt": {"value": 0.1, "unit": "mV"}}},
     r"\[integration\] dt has unit 'mV', which is not a time"),
    ({"equations": "du/dt = (-u + nope)/tau : 1"}, "undefined name"),
    ({"equations": "du/dt = (-u + : 1"}, "invalid Brian2 equations"),
    ({"coupled_variable": "x"}, "coupled_variable"),
    ({"parameters": {"tau": {"value": 1.0, "unit": "parsec"}}}, "unknown unit"),
    ({"parameters": {"tau": {"value": float("nan"), "unit": "ms"}}}, "finite"),
    ({"parameters": {"tau": {"value": -1.0, "unit": "ms"}}}, "positive"),
    ({"rho": "__import__('os')"}, "rho"),
    ({"colour": "blue"}, "unknown key"),
    ({"structural_class": "gradient"}, "energy"),
    ({"energy": "u**2/2 + foo"}, r"energy may depend only on the state variables \['u'\] "
                                  r"and parameters, found \['foo'\]"),
    ({"energy": "u**2/2 + I_syn*u"}, r"energy .* found \['I_syn'\]"),
    ({"integration": {"dt": {"value": -0.5, "unit": "ms"}}},
     r"\[integration\] dt must be a positive number of seconds, got -0.0005"),
    ({"integration": {"max_steps": 0}}, r"\[integration\] max_steps must be a whole number "
                                        "of at least 1, got 0"),
    ({"integration": {"max_steps": 2.5}}, "max_steps must be a whole number"),
    ({"integration": {"tol": -1.0}}, r"\[integration\] tol must be a non-negative number"),
    ({"integration": {"tol": "small"}}, "tol must be a non-negative number, got 'small'"),
    ({"integration": {"steps": 10}}, r"\[integration\] has unknown key\(s\) \['steps'\]"),
    ({"bounds": {"u": [float("-inf"), float("inf")]}}, r"bounds.u = \[-inf, inf\] must be "
                                                       "finite numbers; leave 'u' out"),
])
def test_bad_model_files_are_refused_with_a_clear_message(change, message):
    with pytest.raises(ModelError, match=message):
        model_from_dict({**GOOD, **change})


def test_missing_key_is_named():
    data = dict(GOOD)
    del data["rho"]
    with pytest.raises(ModelError, match="missing key 'rho'"):
        model_from_dict(data)


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ModelError, match="available: .*fhn"):
        load_model("izhikevich_but_misspelt")


def test_parameter_override():
    assert load_model("fhn", eps=3.0).parameters["eps"] == 3.0
    with pytest.raises(ModelError, match="unknown parameter"):
        load_model("fhn", epsilon=3.0)


def test_parameter_overrides_are_si_numbers():
    fhn = load_model("fhn")
    assert load_model("fhn", eps=3).parameters["eps"] == 3.0
    for value in ("3", True, {"value": 2, "unit": "ms"}):
        with pytest.raises(ModelError, match="must be a number in SI units"):
            fhn.with_parameters(eps=value)
    with pytest.raises(ModelError, match=r"parameter\(s\) \['eps'\] must be finite"):
        fhn.with_parameters(eps=10 ** 400)


def test_an_unsupported_function_names_the_file_and_the_functions_as_written():
    from neuroeq.compiled_model import CompiledModel

    model = model_from_dict({**GOOD, "equations": "du/dt = (-u + foo(I_syn) + bias)/tau : 1"},
                            source="somewhere/toy.toml")
    with pytest.raises(ModelError, match=r"model 'toy' \(somewhere/toy.toml\): du/dt: function "
                                         r"'foo' is not supported .*\(supported: abs, clip, "):
        CompiledModel(model)
