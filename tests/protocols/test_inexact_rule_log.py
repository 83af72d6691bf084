"""A protocol that runs a rule on a coupling where it is not exact (skew-gradient EP on a
feedforward or asymmetric FHN net) completes, and its log says why the estimates are not
the gradient there; one whose rules are exact logs no such note."""

import warnings

import pytest

from neuroeq.protocols import load_protocol, run_protocol

NOTE = "its estimate is not the gradient there"
TRAIN = {
    "protocol": {"name": "tiny_fhn", "kind": "train"},
    "model": {"name": "fhn"},
    "network": {"sizes": [64, 8, 10], "coupling": "feedforward", "seed": 1},
    "engine": {"free_steps": 20, "nudged_steps": 5, "tol": 0.0},
    "rule": {"name": "centered", "beta": 0.5},
    "data": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.1, "limit_train": 64,
                 "limit_test": 32},
    "outputs": {"state_samples": 0, "figures": False},
}


def _gradcheck(couplings, rules):
    return {"protocol": {"name": "g", "kind": "gradcheck"},
            "gradcheck": {"models": ["fhn"], "sizes": [4, 5, 3], "couplings": couplings,
                          "rules": rules, "betas": [1e-3], "batch": 2},
            "outputs": {"figures": False}}


def test_a_train_protocol_logs_that_skew_centered_is_not_exact_on_feedforward(tmp_path):
    with pytest.warns(RuntimeWarning, match="rule 'skew_centered'.*" + NOTE):
        out = run_protocol(load_protocol(TRAIN), tmp_path / "run", progress=False)
    log = (out / "log.txt").read_text()
    assert "WARNING" in log and "rule 'skew_centered' (CenteredSkewGradientEP)" in log
    assert "coupling is 'feedforward': " + NOTE in log
    assert (out / "DONE").is_file()


def test_a_gradcheck_protocol_logs_each_inexact_rule_and_coupling_once(tmp_path):
    with pytest.warns(RuntimeWarning, match=NOTE):
        out = run_protocol(load_protocol(_gradcheck(["symmetric", "asymmetric"],
                                                    ["ep", "centered", "asym", "implicit"])),
                           tmp_path / "g", progress=False)
    notes = [line for line in (out / "log.txt").read_text().splitlines() if NOTE in line]
    assert len(notes) == 2
    assert any("rule 'skew_ep'" in line for line in notes)
    assert any("rule 'skew_centered'" in line for line in notes)
    assert all("coupling is 'asymmetric'" in line for line in notes)
    assert (out / "DONE").is_file()


def test_a_gradcheck_protocol_of_exact_rules_logs_no_note(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", NOTE)
        out = run_protocol(load_protocol(_gradcheck(["symmetric", "feedforward"],
                                                    ["asym", "dyadic"])),
                           tmp_path / "g", progress=False)
    assert NOTE not in (out / "log.txt").read_text()


def test_an_asymmetry_protocol_logs_that_ep_is_not_exact_there(tmp_path):
    protocol = {"protocol": {"name": "a", "kind": "asymmetry"},
                "model": {"name": "hopfield_smooth"},
                "asymmetry": {"alphas": [0.0, 1.0], "rules": ["ep", "asym"],
                              "gradcheck_sizes": [4, 5, 3], "seeds": [0], "train": False},
                "outputs": {"figures": False}}
    with pytest.warns(RuntimeWarning, match="rule 'ep'.*" + NOTE):
        out = run_protocol(load_protocol(protocol), tmp_path / "a", progress=False)
    notes = [line for line in (out / "log.txt").read_text().splitlines() if NOTE in line]
    assert len(notes) == 1 and "rule 'ep' (ClassicEP)" in notes[0]
    assert "coupling is 'asymmetric'" in notes[0]
