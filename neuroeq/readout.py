"""Readout and cost: output-unit rates to predictions, the cost ``C`` and its gradient.

The nudging force the engines inject into the output units is ``-(β/τ) ∂C/∂s_out`` with
``∂C/∂s_out = ρ'(s_out) ∂C/∂r_out`` (the readout acts on the rates ``r = ρ(s)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neuroeq.checks import whole_number
from neuroeq.errors import ConfigError, sample_list, short
from neuroeq.seeds import check_seed

READOUT_KINDS = ("identity", "linear")
COSTS = ("mse", "cross_entropy")
#: dtypes read as class labels (others as float targets)
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
#: unsigned dtypes torch supports in few kernels: labels, read as int64
WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


class Readout(nn.Module):
    """Maps output rates ``r`` (batch, n_out) to predictions (batch, n_classes).

    ``n_out`` (at least 1) output units read; ``n_classes`` (default ``n_out``) columns
    predicted: at least 1 for ``mse`` (one column regresses a float target), at least 2
    for ``cross_entropy``. Sizes are whole numbers (a bool is refused).

    ``identity``: prediction ``r`` itself (``n_out == n_classes``); ``linear``:
    ``W r + b``. Costs: ``mse`` ``C = ½‖p - t‖²`` and ``cross_entropy``
    ``C = -Σ_k t_k log softmax(p)_k``, with ``t = onehot(y)`` for class labels (then
    ``C = -log softmax(p)_y``) or the float targets given.
    """

    def __init__(self, n_out: int, n_classes: int | None = None, kind: str = "identity",
                 cost: str = "mse", seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        if kind not in READOUT_KINDS:
            raise ConfigError(f"readout kind {kind!r} must be one of {', '.join(READOUT_KINDS)}")
        if cost not in COSTS:
            raise ConfigError(f"cost {cost!r} must be one of {', '.join(COSTS)}")
        n_out, n_classes = _sizes(n_out, n_classes, cost)
        if kind == "identity" and n_classes != n_out:
            raise ConfigError(f"an identity readout needs as many output units ({n_out}) as "
                              f"classes ({n_classes}); use kind='linear'")
        self.kind, self.cost_name = kind, cost
        self.n_out, self.n_classes = n_out, n_classes
        if kind == "linear":
            generator = torch.Generator().manual_seed(check_seed(seed, "readout seed") + 7919)
            bound = 1.0 / math.sqrt(n_out)
            self.weight = nn.Parameter(
                (torch.rand(n_classes, n_out, generator=generator, dtype=dtype) * 2 - 1) * bound)
            self.bias = nn.Parameter(torch.zeros(n_classes, dtype=dtype))

    def forward(self, rates: torch.Tensor) -> torch.Tensor:
        """Predictions (logits for cross-entropy), shape ``(..., batch, n_classes)``."""
        if self.kind == "identity":
            return rates
        # (complex rates: holomorphic EP's nudged phases; .to is free for real ones)
        return rates @ self.weight.to(rates.dtype).transpose(-1, -2) + self.bias.to(rates.dtype)

    def targets(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """One-hot targets from class labels in ``[0, n_classes)`` (or float targets of
        ``n_classes`` columns, passed through)."""
        if y.dtype in WIDE_UNSIGNED:  # (a uint64 beyond int64 turns negative: refused below)
            y = y.to(torch.int64)
        if y.dtype in LABEL_DTYPES:
            self._check_labels(y)
            # one-hot written in the target dtype (functional.one_hot builds int64, then a
            # cast: 8 against 5 µs at batch 128)
            targets = torch.zeros(*y.shape, self.n_classes, dtype=like.dtype, device=like.device)
            return targets.scatter_(-1, y.long().unsqueeze(-1), 1.0)
        if not y.is_floating_point() and not y.is_complex():  # bool, quantized, ...
            raise ConfigError(f"targets of dtype {y.dtype} are neither class labels (an "
                              "integer tensor, e.g. y.long()) nor float targets")
        if y.dim() == 0 or y.shape[-1] != self.n_classes:
            raise ConfigError(f"float targets of shape {tuple(y.shape)} must have "
                              f"{self.n_classes} columns, one per class of the readout "
                              "(or pass integer class labels)")
        return y.to(like.dtype)

    def _check_labels(self, y: torch.Tensor) -> None:
        """Raise a :class:`ConfigError` naming the samples whose labels are not class
        indices (one reduction when they all are)."""
        if not y.numel():
            return
        low, high = (int(v) for v in torch.aminmax(y))
        if low < 0 or high >= self.n_classes:
            samples = sample_list((y < 0) | (y >= self.n_classes))
            raise ConfigError(f"labels must be class indices in [0, {self.n_classes}); got "
                              f"{low if low < 0 else high} (samples {short(samples)}): the "
                              f"readout predicts {self.n_classes} classes")

    def cost(self, rates: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cost ``C(r, y)``, shape ``(..., batch)``, for rates ``r``
        (..., batch, n_out) and class labels ``y`` (…, batch) or float targets
        (…, batch, n_classes) of the same batch (:func:`check_batch`)."""
        prediction = self.forward(rates)  # (not through Module.__call__: ~4 µs per call)
        target = self.targets(y, prediction)
        check_batch(y, target, prediction)
        if self.cost_name == "mse":
            return 0.5 * ((prediction - target) ** 2).sum(-1)
        return -(target * torch.log_softmax(prediction, dim=-1)).sum(-1)

    def cost_gradient(self, rates: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``∂C/∂r`` in closed form, shape ``(..., batch, n_out)``: ``∂C/∂p = p - t``
        (mse) or ``softmax(p) Σ_k t_k - t`` (cross-entropy; ``softmax(p) - t`` when each
        target row sums to 1, as one-hot targets do), times ``∂p/∂r``."""
        prediction = self.forward(rates)  # (once per nudged step)
        target = self.targets(y, prediction)
        check_batch(y, target, prediction)
        if self.cost_name == "mse":
            error = prediction - target
        elif y.dtype in LABEL_DTYPES + WIDE_UNSIGNED:  # one-hot rows
            error = _softmax(prediction) - target
        else:  # float targets: rows need not sum to 1
            error = _softmax(prediction) * target.sum(-1, keepdim=True) - target
        if self.kind == "identity":
            return error
        return error @ self.weight.to(error.dtype)

    def predict(self, rates: torch.Tensor) -> torch.Tensor:
        """Predicted class labels."""
        return self(rates).argmax(-1)


def check_batch(y: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor) -> None:
    """Refuse labels or targets ``y`` whose batch does not fit the predictions': class
    labels must be ``(…, batch)`` and float targets ``(…, batch, n_classes)`` (``target``,
    ``y`` as one-hot or float rows), with the batch of ``prediction`` (…, batch, n_classes);
    leading dimensions broadcast (one batch of labels for every chain or nudge). Without
    this, labels of shape (batch, 1) would broadcast into a (batch, batch) cost."""
    dims, batch = target.shape[:-1], prediction.shape[:-1]
    if dims == batch and dims:  # (the common case first: ~0.5 µs of every nudged step)
        return
    if dims and batch and dims[-1] == batch[-1] and len(dims) <= len(batch) and all(
            a in (1, b) for a, b in zip(dims[::-1], batch[::-1], strict=False)):
        return
    n = batch[-1] if batch else "?"
    what = "labels" if y.dtype in LABEL_DTYPES + WIDE_UNSIGNED else "float targets"
    raise ConfigError(f"{what} y of shape {tuple(y.shape)} do not fit the output rates' "
                      f"batch shape {tuple(batch)}: class labels must have shape (batch,) = "
                      f"({n},), float targets (batch, n_classes) = ({n}, "
                      f"{prediction.shape[-1]})")


def _sizes(n_out: object, n_classes: object, cost: str) -> tuple[int, int]:
    """``(n_out, n_classes)`` as whole numbers, ``n_classes`` defaulting to ``n_out``: at
    least one output unit and one prediction (mse: one column regresses a float target),
    and at least two classes for cross-entropy (a softmax over one class costs 0 whatever
    the rates: nothing to learn)."""
    n_out = whole_number(n_out, "readout n_out (output units read)", 1)
    name = "readout n_classes" + (" (= n_out when not given)" if n_classes is None else "")
    n_classes = n_out if n_classes is None else n_classes
    if cost == "cross_entropy":
        return n_out, whole_number(n_classes, f"{name} of a cross-entropy cost", 2)
    return n_out, whole_number(n_classes, name, 1)


def _softmax(prediction: torch.Tensor) -> torch.Tensor:
    """``softmax`` over the last axis; for complex predictions (holomorphic EP) its analytic
    continuation ``e^{p - m} / Σ e^{p - m}``, ``m`` the largest real part."""
    if not prediction.is_complex():
        return torch.softmax(prediction, dim=-1)
    exponential = (prediction - prediction.real.amax(-1, keepdim=True)).exp()
    return exponential / exponential.sum(-1, keepdim=True)
