"""Alignment of an estimate with the true gradient: the numbers, not only the plots."""

import math

import numpy as np
import xarray as xr

from neuroeq.analysis.alignment import alignment_summary, cosine


def _vectors(estimate, true):
    dims = ("seed", "element")
    return xr.DataArray(np.asarray(estimate, float), dims=dims), \
        xr.DataArray(np.asarray(true, float), dims=dims)


def test_cosine_is_the_normalised_dot_product_and_ignores_scale_and_padding():
    estimate, true = _vectors([[1.0, 0.0, np.nan], [2.0, 2.0, np.nan]],
                              [[1.0, 1.0, np.nan], [1.0, 1.0, np.nan]])
    np.testing.assert_allclose(cosine(estimate, true).values, [1 / math.sqrt(2), 1.0],
                               rtol=1e-12)


def test_the_summary_averages_over_seeds_and_gives_the_angle():
    estimate, true = _vectors([[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])
    dataset = xr.Dataset({"estimate": estimate, "true": true,
                          "rel_error": ("seed", [0.5, 0.0])})
    summary = alignment_summary(dataset)
    np.testing.assert_allclose(float(summary.cosine_mean), (1 / math.sqrt(2) + 1) / 2,
                               rtol=1e-12)
    np.testing.assert_allclose(float(summary.angle_deg_mean), 22.5, rtol=1e-9)
    assert float(summary.rel_error_mean) == 0.25
