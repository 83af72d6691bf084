"""The spiking baseline: the same layered architecture made of ``snntorch.Leaky`` neurons,
rate-coded input spike trains (``snntorch.spikegen.rate``), trained by backpropagation
through time with a surrogate gradient (the standard method the stochastic-EP paper
compares against). neuroeq re-implements none of it; it only supplies data and metrics.

Leaky neuron per step: ``U[t+1] = β U[t] + I[t] - S[t]·θ``, spike ``S = H(U - θ)``; the
Heaviside's derivative is replaced by the fast-sigmoid surrogate ``1/(1 + k|U - θ|)²``.
Output: spike counts over ``num_steps``; loss: cross-entropy of the counts.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from neuroeq.data import LabeledData
from neuroeq.errors import ConfigError
from neuroeq.io import software_attrs
from neuroeq.progress import progress_bar
from neuroeq.seeds import check_seed


class SpikingMLP(nn.Module):
    """``sizes[0] → … → sizes[-1]`` fully connected layers of Leaky neurons (explicit state
    passing, ``spk, mem = lif(x, mem)``)."""

    def __init__(self, sizes: Sequence[int], beta: float = 0.9, slope: float = 25.0,
                 seed: int = 0):
        import snntorch
        from snntorch import surrogate

        super().__init__()
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ConfigError(f"sizes {list(sizes)} needs at least two positive layer sizes")
        if not 0.0 < beta < 1.0:
            raise ConfigError(f"membrane decay beta {beta} must lie in (0, 1)")
        seed = check_seed(seed, "SNN seed")
        spike_grad = surrogate.fast_sigmoid(slope=slope)
        with torch.random.fork_rng(devices=[]):  # the caller's global stream is left alone
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                        strict=False))
        self.neurons = nn.ModuleList(snntorch.Leaky(beta=beta, spike_grad=spike_grad)
                                     for _ in self.layers)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """``spikes`` (steps, batch, inputs) → output spike counts (batch, outputs)."""
        membranes = [neuron.init_leaky() for neuron in self.neurons]
        counts = 0.0
        for step in spikes:
            signal = step
            for k, (layer, neuron) in enumerate(zip(self.layers, self.neurons, strict=True)):
                signal, membranes[k] = neuron(layer(signal), membranes[k])
            counts = counts + signal
        return counts


def _encode(x: torch.Tensor, num_steps: int, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli rate code: each pixel spikes with probability equal to its intensity
    (``snntorch.spikegen.rate``; seeded through torch's global generator state)."""
    from snntorch import spikegen

    state = torch.random.get_rng_state()
    torch.random.set_rng_state(generator.get_state())
    try:
        spikes = spikegen.rate(x, num_steps=num_steps)
    finally:
        generator.set_state(torch.random.get_rng_state())
        torch.random.set_rng_state(state)
    return spikes


@torch.no_grad()
def _accuracy(model: SpikingMLP, data: LabeledData, num_steps: int, batch_size: int,
              generator: torch.Generator) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
        counts = model(_encode(x, num_steps, generator))
        loss += float(nn.functional.cross_entropy(counts, y, reduction="sum"))
        correct += int((counts.argmax(1) == y).sum())
    return loss / len(data), correct / len(data)


def train_snn_bptt(train_data: LabeledData, test_data: LabeledData, sizes: Sequence[int], *,
                   epochs: int = 5, batch_size: int = 128, lr: float = 5e-4,
                   num_steps: int = 25, beta: float = 0.9, seed: int = 0,
                   progress: bool = True, on_epoch: Callable[[dict], None] | None = None
                   ) -> xr.Dataset:
    """Train a :class:`SpikingMLP` with Adam + BPTT; per-epoch metrics as a dataset
    (``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
    ``samples_per_second``, ``epoch_seconds``, ``peak_rss_mb``)."""
    if sizes[0] != train_data.n_features:
        raise ConfigError(f"sizes start with {sizes[0]} inputs, data set {train_data.name!r} "
                          f"has {train_data.n_features} features")
    if num_steps < 1 or epochs < 1 or batch_size < 1:
        raise ConfigError("num_steps, epochs and batch_size must be positive")
    model = SpikingMLP(sizes, beta=beta, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_data), generator=generator)
        started, seen, correct, total = time.perf_counter(), 0, 0, 0.0
        bar = progress_bar(range(0, len(order), batch_size), f"snn epoch {epoch}/{epochs}",
                           progress)
        for start in bar:
            index = order[start:start + batch_size]
            x, y = train_data.x[index], train_data.y[index]
            counts = model(_encode(x, num_steps, generator))
            loss = nn.functional.cross_entropy(counts, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
            total += float(loss.detach()) * len(y)
            correct += int((counts.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        seconds = time.perf_counter() - started
        test_loss, test_accuracy = _accuracy(model, test_data, num_steps, 1000, generator)
        row = {"epoch": epoch, "train_loss": total / seen, "train_accuracy": correct / seen,
               "test_loss": test_loss, "test_accuracy": test_accuracy,
               "samples_per_second": seen / seconds, "epoch_seconds": seconds,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return xr.Dataset(
        {k: ("epoch", np.array([row[k] for row in history])) for k in history[0]
         if k != "epoch"},
        coords={"epoch": [row["epoch"] for row in history]},
        attrs={"title": "snntorch BPTT baseline", "rule": "bptt_surrogate",
               "model": "snntorch.Leaky", "sizes": list(sizes), "num_steps": num_steps,
               "membrane_beta": beta, "lr": lr, "dataset": train_data.name,
               **software_attrs()})
