"""Shared fixtures: small float64 problems, seeded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from neuroeq import Network, TorchEngine

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seeded_global_streams():
    """Every test starts from the same global torch and numpy streams, so a test that
    draws from them gives the same numbers whatever ran before it."""
    import numpy as np

    torch.manual_seed(0)
    np.random.seed(0)


def pytest_configure(config):
    # Brian2's code-generation cache lives inside the project, not in the home directory.
    os.environ.setdefault("NEUROEQ_CACHE_DIR", str(REPO / ".cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_problem(model: str, sizes=(20, 16, 5), coupling="symmetric", alpha=None, seed=0,
                 batch=4, dtype=torch.float64, **network_options):
    """A network and a seeded batch ``(x, y)``."""
    network = Network(model, sizes, coupling=coupling, alpha=alpha, seed=seed, dtype=dtype,
                      **network_options)
    generator = torch.Generator().manual_seed(1000 + seed)
    x = torch.rand(batch, sizes[0], generator=generator, dtype=dtype)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator)
    return network, (x, y)


@pytest.fixture
def precise_engine():
    return TorchEngine(tol=1e-12, max_steps=100_000)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()))


@pytest.fixture
def one_torch_thread():
    """Many tiny steps (Langevin, complex Euler, short protocols): intra-op threads only add
    contention on a busy machine, so such modules run on one torch thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def map_evaluations(monkeypatch):
    """Counts of the closed-form map's evaluations from now on, by kind: ``"sweep"``
    (Gauss-Seidel sweeps) and ``"euler"`` (Euler steps, Anderson's map, sweeps' checks)."""
    from neuroeq.engines import fast_step

    calls = {"sweep": 0, "euler": 0}
    evaluate = fast_step.EulerMap.__call__

    def counted(self, *args, **kwargs):
        calls["sweep" if self.sweep else "euler"] += 1
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(fast_step.EulerMap, "__call__", counted)
    return calls
