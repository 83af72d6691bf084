"""Engines that relax a network to its stationary states (Brian2 is imported only when a
Brian2 engine first builds a simulation)."""

from neuroeq.engines.brian2_engine import Brian2Engine
from neuroeq.engines.brian2_spiking import SpikingEngine, SpikingPhase
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine

#: Any of the engines a protocol or a rule can be given.
Engine = TorchEngine | Brian2Engine | SpikingEngine

__all__ = ["Brian2Engine", "Engine", "RelaxResult", "SpikingEngine", "SpikingPhase",
           "TorchEngine"]
