"""Weight changes: ΔW = W(after) - W(before), with its sign, and the final weights."""

import numpy as np
import torch

from neuroeq.analysis.plasticity import weight_changes


def test_weight_changes_are_after_minus_before():
    before = {"W1": torch.zeros(3, 4), "b1": torch.zeros(3)}
    after = {"W1": torch.arange(12.0).reshape(3, 4), "b1": torch.ones(3)}
    changes = weight_changes(before, after)
    np.testing.assert_array_equal(changes.W1.values, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(changes.W1_final.values, np.arange(12.0).reshape(3, 4))
    assert changes.W1.dims == ("W1_post", "W1_pre")
    assert "b1" not in changes  # matrices only
