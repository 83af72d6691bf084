"""The built-in task: scikit-learn's bundled 8×8 handwritten digits (1,797 real images),
split into a fixed, seeded train/test partition. Needs no download."""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.25
SPLIT_SEED = 20170524


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, 64)`` scaled to [0, 1] and labels ``(N,)`` for ``train``/``test``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(TEST_FRACTION * len(y)))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return x[chosen], y[chosen]
