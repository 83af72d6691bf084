"""Plasticity maps: the weight changes ``ΔW`` a rule made, as a dataset and as pictures
(receptive-field images for the input layer, heat maps for the others)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def weight_changes(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]
                   ) -> xr.Dataset:
    """``ΔW = after - before`` for every matrix parameter, one variable each with dims
    ``(NAME_post, NAME_pre)``, plus the final weights as ``NAME_final``."""
    variables = {}
    for name, old in before.items():
        if old.dim() != 2 or name not in after:
            continue
        new = after[name].detach().cpu().double().numpy()
        dims = (f"{name}_post", f"{name}_pre")
        variables[name] = (dims, new - old.detach().cpu().double().numpy())
        variables[f"{name}_final"] = (dims, new)
    return xr.Dataset(variables, attrs={"title": "weight changes ΔW (after - before)"})


def _image_shape(image_shape: object, name: str, n_pre: int) -> tuple[int, int]:
    """``image_shape`` as ``(rows, columns)`` of whole numbers whose product is the number
    of presynaptic units ``n_pre`` of ``name`` (one pixel per input)."""
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__len__") \
            or len(image_shape) != 2:
        raise ConfigError(f"plot_plasticity_map: image_shape must be a pair (rows, columns), "
                          f"got {image_shape!r}")
    rows, columns = (whole_number(n, "plot_plasticity_map: image_shape's sizes", 1)
                     for n in image_shape)
    if rows * columns != n_pre:
        raise ConfigError(f"plot_plasticity_map: image_shape ({rows}, {columns}) has "
                          f"{rows * columns} pixels, but {name} has {n_pre} inputs "
                          "(presynaptic units); the image shape's product must equal the "
                          "number of inputs")
    return rows, columns


def plot_plasticity_map(changes: xr.Dataset, name: str = "W1", units: int = 16,
                        image_shape: tuple[int, int] | None = None) -> Figure:
    """ΔW of ``name``: the rows of the first ``units`` postsynaptic neurons as images when
    the presynaptic layer is an image (``image_shape``; guessed for ``W1``, the input's
    weights, when the input is square; a given ``(rows, columns)`` must hold the
    presynaptic units, ``rows · columns = n_pre``), else the whole matrix as a heat map.
    Colours are symmetric around zero (NaN entries left blank)."""
    import matplotlib.pyplot as plt

    units = whole_number(units, "units", 1)
    delta = changes[name].values
    n_pre = delta.shape[1]
    if image_shape is None and name == "W1":
        side = int(round(math.sqrt(n_pre)))
        image_shape = (side, side) if side * side == n_pre and side > 2 else None
    elif image_shape is not None:
        image_shape = _image_shape(image_shape, name, n_pre)
    finite = np.abs(delta[np.isfinite(delta)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    if image_shape is None:
        figure, ax = plt.subplots(figsize=(5, 4))
        shown = ax.imshow(delta, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xlabel("presynaptic unit")
        ax.set_ylabel("postsynaptic unit")
        figure.colorbar(shown, ax=ax, label="ΔW")
        ax.set_title(f"plasticity map ΔW ({name})")
        return figure
    units = min(units, delta.shape[0])
    columns = min(8, units)
    rows = math.ceil(units / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows + 0.4),
                                squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < units:
            ax.imshow(delta[k].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"unit {k}", fontsize=7)
    figure.suptitle(f"ΔW of {name}: receptive-field changes (red +, blue -)", fontsize=9)
    return figure
