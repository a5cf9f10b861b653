"""Training: one trainer for every backbone x paradigm, single-process or torchrun DDP."""

from pyairir.train.config import PRESETS, TrainConfig, from_preset, load_config
from pyairir.train.trainer import Trainer, build_model, train

__all__ = ["PRESETS", "TrainConfig", "Trainer", "build_model", "from_preset", "load_config", "train"]
