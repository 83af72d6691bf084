"""Engines that relax a network to its stationary states."""

from neuroeq.engines.torch_engine import RelaxResult, TorchEngine

__all__ = ["RelaxResult", "TorchEngine"]
