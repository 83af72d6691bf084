"""``classify``: the right class for every shipped model, and wrong claims are flagged."""

import math
import tomllib

import pytest

from neuroeq.classify import classify
from neuroeq.cli import main
from neuroeq.cli_classify import parse_grid
from neuroeq.errors import ConfigError
from neuroeq.neuron_model import available_models, find_model_file, model_from_dict
from neuroeq.stability import stability_scan

EXPECTED = {"hopfield": "gradient", "hopfield_smooth": "gradient", "fhn": "skew_gradient",
            "spiking_rate": "general", "oscillator": "gradient", "linear": "gradient"}

# du/dt = -u + I_syn + bias with a smooth rate: J = -I + W diag(rho'), not symmetrisable by a
# constant diagonal (the Hopfield 1984 form without rho' in front of the input).
NOT_GRADIENT = {
    "name": "claims_gradient", "structural_class": "gradient", "coupled_variable": "u",
    "time_constant": "tau", "equations": "du/dt = (-u + I_syn + bias)/tau : 1",
    "rho": "tanh(u)", "rho_prime": "1 - tanh(u)**2", "energy": "u**2/2",
    "parameters": {"tau": {"value": 1.0, "unit": "ms"}},
}


def _load(name: str) -> dict:
    with open(find_model_file(name), "rb") as handle:
        return tomllib.load(handle)


@pytest.mark.parametrize("name", available_models())
def test_every_shipped_model_is_what_it_claims(name):
    result = classify(name)
    assert result.consistent, result.report()
    assert result.found == result.declared
    if name in EXPECTED:
        assert result.found == EXPECTED[name]


def test_fhn_is_skew_gradient_with_q_diag_1_minus_eps():
    result = classify("fhn")
    assert result.found == "skew_gradient"
    assert math.isclose(result.Q["v"], 1.0)
    assert math.isclose(result.Q["w"], -6.0, rel_tol=1e-9)
    assert result.raw_asymmetry > 0.1 and result.nonreciprocity < 1e-12
    assert "skew_centered" in [rule for rule, _ in result.exact_rules]
    assert "ep" not in [rule for rule, _ in result.exact_rules]


def test_general_model_reports_its_non_reciprocal_part():
    result = classify(model_from_dict({**NOT_GRADIENT, "structural_class": "general"}))
    assert result.found == "general" and not result.piecewise_gradient
    assert result.Q is None
    assert 0.01 < result.nonreciprocity < 1
    assert [rule for rule, _ in result.exact_rules] == ["asym", "dyadic"]
    assert "ep, centered and vf are biased" in result.report()


def test_a_piecewise_linear_rate_makes_the_general_form_a_gradient_system_where_it_is_linear():
    # spiking_rate: du/dt = -u + W clip(u, 0, 1) + b, not symmetrisable by a constant diagonal,
    # but diag rho'(u) (0 or 1) symmetrises J at every state: ep and centered are exact
    # (tests/rules/test_ep.py checks them against implicit differentiation)
    result = classify("spiking_rate")
    assert result.found == "general" and result.piecewise_gradient
    assert 0.01 < result.nonreciprocity < 1
    assert [rule for rule, _ in result.exact_rules] == ["ep", "centered", "asym", "dyadic"]
    assert not result.holomorphic and "clip" in result.non_analytic
    assert "exact only because rho' is 0 or 1" in result.report()


def test_a_model_falsely_claiming_gradient_is_flagged():
    result = classify(model_from_dict(NOT_GRADIENT))
    assert result.found == "general"
    assert not result.consistent
    assert "declared gradient" in result.problems[0]
    assert "general" in result.report() and "MISMATCH" in result.report()


def test_a_wrong_energy_is_flagged_even_with_a_symmetric_jacobian():
    data = {**_load("hopfield_smooth"), "energy": "s**2"}
    result = classify(model_from_dict(data))
    assert result.found == "gradient"
    assert not result.consistent
    assert any("energy does not generate" in p for p in result.problems)


def test_a_wrong_q_is_flagged():
    data = {**_load("fhn"), "Q": {"v": "1", "w": "-1"}}
    result = classify(model_from_dict(data))
    assert result.found == "skew_gradient"
    assert any("declared Q" in p and "w = -6" in p for p in result.problems)


def test_skew_gradient_claimed_as_gradient_is_flagged():
    data = {**_load("fhn"), "structural_class": "gradient"}
    data.pop("Q")
    result = classify(model_from_dict(data))
    assert result.found == "skew_gradient" and not result.consistent


def test_non_conservative_two_variable_model_claiming_skew_gradient():
    data = _load("fhn")
    # the inhibitor is driven by w itself in the activator (no energy can give -w*w here)
    data["equations"] = ("dv/dt = (v - v**3/3 - w + rho_prime*(I_syn + bias)) / tau : 1\n"
                         "dw/dt = eps*(v**2 + a - b*w) / tau : 1\n")
    result = classify(model_from_dict(data))
    assert result.found == "general" and not result.consistent


def test_stability_scan_counts_units_pinned_at_a_bound_as_settled():
    """A hard-sigmoid net settles with saturated units pinned at 0 or 1 (F points outwards
    there): the fixed point is found and stable, not reported as missing (NaN)."""
    ds = stability_scan("hopfield", {"tau": [1e-3, 2e-3]})
    assert ds.net_settled_fraction.values.tolist() == [1.0, 1.0]
    assert all(math.isfinite(v) for v in ds.net_max_real_eig.values)
    assert all(v < 0 for v in ds.net_max_real_eig.values)


def test_stability_scan_finds_the_fhn_oscillating_regime():
    ds = stability_scan("fhn", {"eps": [0.08, 6.0]}, max_steps=3000)
    assert bool(ds.unit_settled.sel(eps=6.0)) and bool(ds.unit_settled.sel(eps=0.08))
    assert float(ds.net_settled_fraction.sel(eps=6.0)) == 1.0
    assert float(ds.net_max_real_eig.sel(eps=6.0)) < 0
    # at eps = 0.08 the coupled net's fixed point is unstable: a limit cycle
    assert float(ds.net_settled_fraction.sel(eps=0.08)) < 1.0
    assert float(ds.net_max_real_eig.sel(eps=0.08)) > 0


def test_a_grid_point_whose_relaxation_blows_up_is_recorded_not_raised():
    # FHN at eps = 100: Euler steps of the model's dt overshoot a stable fixed point
    ds = stability_scan("fhn", {"eps": [6.0, 100.0]}, max_steps=2000)
    assert bool(ds.unit_settled.sel(eps=6.0)) and not bool(ds.unit_settled.sel(eps=100.0))
    assert float(ds.net_settled_fraction.sel(eps=100.0)) == 0.0
    assert float(ds.unit_max_real_eig.sel(eps=100.0)) < 0  # Newton's point is stable
    assert float(ds.net_max_real_eig.sel(eps=100.0)) < 0


def test_parse_grid():
    assert parse_grid(["b=0:1:3", "eps=1,6"]) == {"b": [0.0, 0.5, 1.0], "eps": [1.0, 6.0]}
    with pytest.raises(ConfigError, match="NAME=LOW:HIGH:COUNT"):
        parse_grid(["eps"])
    with pytest.raises(ConfigError, match="unknown parameter"):
        stability_scan("fhn", {"epsilon": [1.0]})
    # sizes that would allocate terabytes are refused, with a short message
    with pytest.raises(ConfigError, match=r"COUNT must lie in \[1, 10,000\]"):
        parse_grid(["a=0:1:1000000000000"])
    with pytest.raises(ConfigError, match=r"^grid over a, b: at most 10,000 points"):
        stability_scan("fhn", parse_grid(["a=0:1:1000", "b=0:1:1000"]))


def test_cli_classify_exit_codes(tmp_path, capsys):
    assert main(["classify", "fhn"]) == 0
    out = capsys.readouterr().out
    assert "found skew_gradient" in out and "w = -6" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nstructural_class = "gradient"\ncoupled_variable = "u"\n'
                   'time_constant = "tau"\nequations = "du/dt = (-u + I_syn + bias)/tau : 1"\n'
                   'rho = "tanh(u)"\nrho_prime = "1 - tanh(u)**2"\nenergy = "u**2/2"\n'
                   '[parameters]\ntau = {value = 1.0, unit = "ms"}\n')
    assert main(["classify", str(bad)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["classify", "fhn", "--grid", "eps"]) == 2
    assert "NAME=LOW:HIGH:COUNT" in capsys.readouterr().err
    assert main(["classify", "nope"]) == 2


def test_a_piecewise_linear_rate_with_another_coupling_gain_is_not_called_a_gradient_system():
    """diag rho' J is symmetric for ds/dt = -u + ½I_syn + b too, but the EP energy's
    coupling has gain 1: ep and centered are biased there (gradcheck: 0.29 relative)."""
    data = {**_load("spiking_rate"), "name": "half_gain",
            "equations": _load("spiking_rate")["equations"].replace("I_syn", "0.5*I_syn")}
    result = classify(model_from_dict(data))
    assert result.found == "general" and not result.piecewise_gradient
    assert [rule for rule, _ in result.exact_rules] == ["asym", "dyadic"]


def test_the_noisy_rules_are_listed_only_where_every_q_is_one():
    """The Langevin sampler draws exp(-E/T), the stationary law for Q = 1 only."""
    assert "finite_nudge" in [rule for rule, _ in classify("hopfield_smooth").exact_rules]
    data = {"name": "two_speeds", "structural_class": "gradient", "coupled_variable": "u",
            "time_constant": "tau", "parameters": {"tau": {"value": 1.0, "unit": "ms"}},
            "equations": "du/dt = (-u + w + I_syn + bias)/tau : 1\n"
                         "dw/dt = 2*(u - 2*w)/tau : 1",
            "rho": "u", "rho_prime": "1", "energy": "u**2/2 - u*w + w**2", "Q": {"w": "2"}}
    result = classify(model_from_dict(data))
    assert result.found == "gradient" and result.consistent, result.report()
    assert not {"finite_nudge", "path_integral"} & {rule for rule, _ in result.exact_rules}
