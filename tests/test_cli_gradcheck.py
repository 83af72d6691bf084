"""``neuroeq gradcheck``: dataset contents, NetCDF output, clear errors with exit 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from neuroeq.cli import main
from neuroeq.errors import ConfigError
from neuroeq.gradcheck import convergence_slope, gradcheck
from neuroeq.neuron_model import load_model


def test_gradcheck_dataset_has_the_promised_variables():
    ds = gradcheck(models=["hopfield_smooth"], sizes=(8, 6, 3),
                   couplings=["symmetric", "asymmetric"], alphas=[0.5, 1.0],
                   rules=["ep", "centered", "asym", "implicit"], betas=[1e-2, 1e-3],
                   seeds=[0, 1], batch=2)
    assert set(ds.cosine.dims) == {"model", "coupling", "alpha", "seed", "rule", "beta"}
    assert list(ds.rule.values) == ["ep", "centered", "asym", "implicit"]
    for name in ("cosine", "rel_error", "estimate", "true"):
        assert name in ds
    assert json.loads(ds.attrs["config"])["sizes"] == [8, 6, 3]
    assert "neuroeq_version" in ds.attrs
    symmetric = ds.sel(coupling="symmetric", alpha=1.0)
    assert float(symmetric.cosine.sel(rule="centered").min()) > 0.9999
    assert float(ds.rel_error.sel(rule="implicit").max()) == 0.0
    slope = convergence_slope(ds.sel(coupling="symmetric", alpha=1.0), "ep")
    assert 0.8 < slope < 1.2


def test_a_loaded_model_is_checked_with_its_parameter_overrides():
    """(An asymmetry protocol passes its [model] with its parameters: they reach the check.)"""
    kwargs = dict(sizes=(6, 5, 3), rules=["ep"], batch=2, dtype="float64")
    plain = gradcheck(models=["fhn"], **kwargs)
    shifted = gradcheck(models=[load_model("fhn", a=0.2)], **kwargs)
    assert list(shifted.model.values) == ["fhn"]
    assert not np.allclose(plain.true.values, shifted.true.values, equal_nan=True)
    again = gradcheck(models=[load_model("fhn")], **kwargs)
    np.testing.assert_array_equal(plain.true.values, again.true.values)


def test_elements_of_nets_with_different_parameters_are_labelled_by_name():
    # symmetric nets hold W1, W2, b1, b2; asymmetric ones also BW2 (their order: W1, W2,
    # BW2, b1, b2): one axis, each parameter in the order it first appeared
    ds = gradcheck(models=["hopfield_smooth"], sizes=(3, 4, 2),
                   couplings=["symmetric", "asymmetric"], rules=["dyadic"], betas=[1e-3],
                   seeds=[0], batch=2)
    labels = [str(v).rsplit(".", 1)[-1] for v in ds.parameter.values]
    assert labels == ["W1"] * 12 + ["W2"] * 8 + ["b1"] * 4 + ["b2"] * 2 + ["BW2"] * 8
    symmetric = ds.true.sel(coupling="symmetric", rule="dyadic").squeeze().values
    asymmetric = ds.true.sel(coupling="asymmetric", rule="dyadic").squeeze().values
    feedback = np.array([label == "BW2" for label in labels])
    assert np.isnan(symmetric[feedback]).all()  # a symmetric net has no BW2
    assert np.isfinite(symmetric[~feedback]).all() and np.isfinite(asymmetric).all()
    # the same parameter sits at the same elements: the input weights agree (W1's gradient
    # differs between the nets, but both are there, unpadded)
    assert not np.allclose(symmetric[:12], 0.0) and not np.allclose(asymmetric[:12], 0.0)


def test_cli_writes_netcdf_and_markdown(tmp_path, capsys):
    out, table = tmp_path / "check.nc", tmp_path / "table.md"
    code = main(["gradcheck", "--sizes", "6,5,3", "--rules", "centered,dyadic", "--beta",
                 "1e-3", "--batch", "2", "--out", str(out), "--markdown", str(table)])
    assert code == 0
    ds = xr.open_dataset(out)
    assert float(ds.cosine.min()) > 0.9999
    assert "neuroeq gradcheck" in table.read_text()
    assert main(["gradcheck", "--sizes", "6,5,3", "--rules", "ep", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "--rules", "ep,telepathy"], "unknown rule 'telepathy'"),
    (["gradcheck", "--model", "nope"], "unknown model 'nope'"),
    (["gradcheck", "--coupling", "diagonal"], "unknown coupling"),
    (["gradcheck", "--beta", "0"], "beta"),
    (["gradcheck", "--sizes", "a,b"], "--sizes"),
    (["gradcheck", "--dtype", "float16"], "dtype"),
    # sizes that would allocate terabytes: refused before anything is built
    (["gradcheck", "--batch", "1000000000000", "--sizes", "4,3,2"], "must lie in [1, 10,000]"),
    (["gradcheck", "--sizes", "100000,100000,10"], "at most 4,096 units beyond the input"),
    (["gibbscheck", "--chains", "1000000000000"], "chains 1000000000000 must lie in"),
    (["gibbscheck", "--sizes", "10,100000,2"], "at most 2,000 units beyond the input"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_the_command_line_program_gives_one_line_and_exit_2():
    """The same through a real process (the entry point, no traceback on stderr)."""
    result = subprocess.run([sys.executable, "-m", "neuroeq.cli", "gradcheck", "--rules",
                             "ep,telepathy"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown rule 'telepathy'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("rule, pointer", [("finite_nudge", "neuroeq gibbscheck"),
                                           ("path_integral", "neuroeq gibbscheck"),
                                           ("stoch_ep", "'stochastic' protocol")])
def test_rules_with_another_reference_point_to_their_check(rule, pointer):
    """The Gibbs rules estimate another objective and StochEP needs the spiking engine:
    a table of them against the deterministic gradient would read as failures."""
    with pytest.raises(ConfigError, match=f"rule '{rule}' is not checked against the "
                                          f"deterministic gradient: .*{pointer}"):
        gradcheck(rules=["ep", rule], sizes=(4, 3, 2))


def test_alpha_reaches_the_asymmetric_networks_only(monkeypatch):
    """Every coupling of one check, one alpha: the symmetric and feedforward networks are
    built without it (they refuse one), the asymmetric one with it."""
    import neuroeq.gradcheck as module

    built = []

    def network(*args, **kwargs):
        built.append((kwargs.get("coupling", "symmetric"), kwargs.get("alpha")))
        return module_network(*args, **kwargs)

    module_network = module.Network
    monkeypatch.setattr(module, "Network", network)
    ds = gradcheck(sizes=(4, 3, 2), couplings=["symmetric", "feedforward", "asymmetric"],
                   alphas=[0.5], rules=["asym"], batch=2)
    assert ("symmetric", None) in built and ("feedforward", None) in built
    assert ("asymmetric", 0.5) in built
    assert all(alpha is None for coupling, alpha in built if coupling != "asymmetric")
    assert list(ds.alpha.values) == [0.5]


def test_alphas_without_an_asymmetric_coupling_are_refused():
    with pytest.raises(ConfigError, match=r"alphas \[0\.3\] set the asymmetry of asymmetric "
                                          r"networks, and couplings symmetric, feedforward "
                                          "have none"):
        gradcheck(sizes=(4, 3, 2), couplings=["symmetric", "feedforward"], alphas=[0.3])
    assert main(["gradcheck", "--sizes", "4,3,2", "--alpha", "0.3", "--rules", "ep"]) == 2
