"""The lists given to the stochastic-versus-mean-field analysis are checked before the
mean-field relaxation runs (no Brian2 simulation: every call here is refused first)."""

import pytest
import torch

from neuroeq import Network
from neuroeq.analysis.stochastic import stochastic_vs_mean_field
from neuroeq.errors import ConfigError


class _NeverRelaxes:
    """A mean-field engine that fails the test if the analysis gets as far as using it."""

    def relax(self, *args, **kwargs):
        raise AssertionError("the mean-field relaxation ran before the arguments were checked")


@pytest.mark.parametrize("option, value, message", [
    ("windows", [], "windows is empty; give at least one"),
    ("replicas", [], "replicas is empty; give at least one"),
    ("seeds", [], "seeds is empty; give at least one"),
    ("seeds", range(0), "seeds is empty"),
    ("windows", [2.7, 5], r"windows \(steps\) entry must be a whole number of at least 1, "
                          "got 2.7"),
    ("windows", [0, 5], "windows .* at least 1, got 0"),
    ("replicas", [1, -2], r"replicas \(replicas per sample\) entry must be a whole number "
                          "of at least 1, got -2"),
    ("replicas", [True], "replicas .* got True"),
    ("windows", 100, "windows must be a list of whole numbers, got 100"),
    ("seeds", [0, -1], "seeds entry must be a whole number of at least 0, got -1"),
    ("seeds", [0, 1.0], "seeds entry must be a whole number, got 1.0"),
    ("seeds", [1, 1], r"seeds holds \[1\] more than once"),
    ("windows", [100, 100], r"windows holds \[100\] more than once"),
])
def test_list_arguments_are_checked_before_anything_runs(option, value, message):
    network = Network("spiking_rate", (5, 6, 3), seed=0, gain=0.5, bias_init=0.5)
    x = torch.rand(2, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with pytest.raises(ConfigError, match=f"stochastic_vs_mean_field: {message}"):
        stochastic_vs_mean_field(network, x, torch.tensor([0, 2]), target="numpy",
                                 mean_field_engine=_NeverRelaxes(), **{option: value})
