"""The snnTorch BPTT baseline: seeded from its own seed, without touching the caller's
random streams."""

import pytest
import torch

pytest.importorskip("snntorch")

from neuroeq.baselines.snn_bptt import SpikingMLP  # noqa: E402


def test_the_seed_fixes_the_weights_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = SpikingMLP((4, 3, 2), seed=7)
    assert torch.equal(torch.rand(3), expected)
    again, other = SpikingMLP((4, 3, 2), seed=7), SpikingMLP((4, 3, 2), seed=8)
    assert torch.equal(first.layers[0].weight, again.layers[0].weight)
    assert not torch.equal(first.layers[0].weight, other.layers[0].weight)
    counts = first(torch.ones(5, 2, 4))
    assert counts.shape == (2, 2)
