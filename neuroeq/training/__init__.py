"""Training: the loop, its settings, checkpoints."""

from neuroeq.training.checkpoint import load_checkpoint, save_checkpoint
from neuroeq.training.config import TrainConfig
from neuroeq.training.trainer import evaluate, make_optimizer, train

__all__ = ["TrainConfig", "evaluate", "load_checkpoint", "make_optimizer", "save_checkpoint",
           "train"]
