"""Weights that depend only on each state_dict key's name and shape, so that two
implementations of one architecture (ours and the official one) can be given
identical parameters without sharing a checkpoint file."""

from __future__ import annotations

import zlib

import torch
from torch import nn


def deterministic_value(name: str, shape: torch.Size) -> torch.Tensor:
    """A float64 tensor of `shape`, a function of `name` alone, scaled to keep activations O(1)."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "prompt_param":
        return torch.rand(shape, generator=generator, dtype=torch.float64)
    if leaf == "temperature" or (leaf == "weight" and len(shape) == 1):  # temperatures, norm scales
        return 1.0 + 0.1 * noise
    if len(shape) <= 1 or leaf in ("beta", "gamma"):  # biases, NAFNet residual scales
        return 0.1 * noise
    fan_in = shape[1:].numel()
    return noise / fan_in ** 0.5


@torch.no_grad()
def fill_deterministic(model: nn.Module) -> nn.Module:
    """Sets every state_dict entry of `model` to deterministic_value(key, shape); returns the model."""
    for name, tensor in model.state_dict().items():
        tensor.copy_(deterministic_value(name, tensor.shape))
    return model
