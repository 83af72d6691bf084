"""Training: the loop, its settings, checkpoints."""

from neuroeq.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from neuroeq.training.config import TrainConfig
from neuroeq.training.trainer import check_resumable, evaluate, make_optimizer, train

__all__ = ["CHECKPOINT_NAME", "TrainConfig", "check_resumable", "evaluate", "load_checkpoint",
           "make_optimizer", "save_checkpoint", "train"]
