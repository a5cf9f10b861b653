"""Backbones with the official class names, arguments and state_dict keys."""

from pyairir.models.adair import AdaIR
from pyairir.models.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from pyairir.models.nafnet import NAFNet, NAFNetLocal
from pyairir.models.promptir import PromptIR
from pyairir.models.registry import create_model, list_models
from pyairir.models.restormer import Restormer

__all__ = [
    "AdaIR", "CheckpointError", "NAFNet", "NAFNetLocal", "PromptIR", "Restormer", "create_model", "list_models",
    "load_checkpoint", "read_state_dict",
]
