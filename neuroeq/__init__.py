"""neuroeq: Equilibrium Propagation in biophysical and spiking neural networks.

Models are data (``models/*.toml``), networks hold their weights as torch tensors, engines
relax them to stationary states, and every learning rule (EP variants and oracles alike)
estimates the gradient through one interface and writes it into ``param.grad``.
"""

from neuroeq.engines import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError, ModelError, NeuroEQError, RelaxationError
from neuroeq.network import Network
from neuroeq.neuron_model import NeuronModel, available_models, load_model
from neuroeq.readout import Readout
from neuroeq.rules import make_rule

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "ModelError", "Network", "NeuroEQError", "NeuronModel", "Readout",
    "RelaxResult", "RelaxationError", "TorchEngine", "__version__", "available_models",
    "load_model", "make_rule",
]
