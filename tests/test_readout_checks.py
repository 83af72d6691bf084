"""The readout's sizes and the shape of the labels it is given: refused by name, before a
cost of the wrong shape or a raw torch error."""

import pytest
import torch

from neuroeq import Network
from neuroeq.errors import ConfigError
from neuroeq.readout import Readout


@pytest.mark.parametrize("args, message", [
    ((0, 3, "linear"), r"readout n_out \(output units read\) must be a whole number of at "
                       "least 1, got 0"),
    ((3, 2.5, "linear"), "readout n_classes must be a whole number of at least 1, got 2.5"),
    ((3, -1, "linear"), "readout n_classes must be a whole number of at least 1, got -1"),
    ((3, 0, "linear"), "readout n_classes must be a whole number of at least 1, got 0"),
    ((1, True), "readout n_classes must be a whole number of at least 1, got True"),
    ((True,), "readout n_out .* got True"),
    (("3",), "readout n_out .* got '3'"),
])
def test_readout_sizes_must_be_whole_numbers_of_at_least_one(args, message):
    with pytest.raises(ConfigError, match=message):
        Readout(*args)


def test_a_cross_entropy_readout_needs_two_classes_and_mse_one_output():
    with pytest.raises(ConfigError, match="n_classes of a cross-entropy cost must be a whole "
                                          "number of at least 2, got 1"):
        Readout(3, 1, "linear", cost="cross_entropy")
    with pytest.raises(ConfigError, match=r"n_classes \(= n_out when not given\) of a "
                                          "cross-entropy cost .* at least 2, got 1"):
        Readout(1, cost="cross_entropy")
    regression = Readout(3, 1, "linear")  # one column regresses a float target
    assert regression.cost(torch.rand(4, 3, dtype=torch.float64),
                           torch.rand(4, 1, dtype=torch.float64)).shape == (4,)
    sizes = Readout(4.0, 2.0, "linear")  # whole floats pass, as ints
    assert (sizes.n_out, sizes.n_classes) == (4, 2)
    assert isinstance(sizes.n_out, int) and isinstance(sizes.n_classes, int)


GOOD = torch.tensor([0, 1, 2, 1, 0])
BAD_BATCHES = {  # labels or targets for a batch of 5
    "a column of labels": GOOD.view(5, 1), "too many": torch.tensor([0, 1, 2, 1, 0, 1]),
    "too few": GOOD[:4], "one label": torch.tensor(1),
    "float targets of another batch": torch.rand(4, 4, dtype=torch.float64)}


@pytest.mark.parametrize("what", list(BAD_BATCHES))
@pytest.mark.parametrize("method", ["cost", "cost_gradient"])
def test_labels_that_do_not_fit_the_batch_are_refused_not_broadcast(what, method):
    readout = Readout(3, 4, kind="linear", cost="cross_entropy")
    rates = torch.rand(5, 3, dtype=torch.float64)
    assert getattr(readout, method)(rates, GOOD).shape[0] == 5
    with pytest.raises(ConfigError, match=r"do not fit the output rates' batch shape "
                                          r"\(5,\): class labels must have shape "
                                          r"\(batch,\) = \(5,\), float targets \(batch, "
                                          r"n_classes\) = \(5, 4\)"):
        getattr(readout, method)(rates, BAD_BATCHES[what])


def test_network_cost_refuses_a_column_of_labels_and_another_batch():
    network = Network("hopfield", (6, 5, 3), seed=0)
    state = network.initial_state(4)
    y = torch.tensor([0, 2, 1, 1])
    assert network.cost(state, y).shape == (4,)
    with pytest.raises(ConfigError, match=r"labels y of shape \(4, 1\) do not fit"):
        network.cost(state, y.view(4, 1))
    with pytest.raises(ConfigError, match=r"labels y of shape \(3,\) do not fit"):
        network.cost(state, y[:3])
    with pytest.raises(ConfigError, match=r"float targets y of shape \(4, 1, 3\) do not fit"):
        network.cost_gradient(state, network.targets(y).unsqueeze(1))


def test_labels_broadcast_over_leading_dimensions_of_the_state():
    """Chains, nudges and quadrature points lead the batch: one batch of labels or targets
    serves them all (the rules and samplers rely on it)."""
    network = Network("hopfield", (6, 5, 3), seed=0)
    generator = torch.Generator().manual_seed(0)
    states = torch.rand(2, 3, 4, network.state_size, generator=generator,
                        dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1])
    cost = network.cost(states, y)
    assert cost.shape == (2, 3, 4)
    torch.testing.assert_close(cost[1, 2], network.cost(states[1, 2], y))
    targets = network.targets(y)
    assert network.cost(states, targets).shape == (2, 3, 4)
    assert network.cost(states, targets.expand(3, 4, 3)).shape == (2, 3, 4)
    assert network.cost_gradient(states, y).shape == states.shape
