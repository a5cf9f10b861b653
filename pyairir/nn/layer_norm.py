"""Channel LayerNorms: Restormer's (WithBias / BiasFree) and NAFNet's LayerNorm2d.

All normalise x (B, C, H, W) over C at each pixel, with the biased variance:
    WithBias:    y = (x - mu) / sqrt(var + eps) * weight + bias
    BiasFree:    y = x / sqrt(var + eps) * weight      (x is not centred)
fast=True runs torch.ops.pyairir.layer_norm_channels, fast=False the eager
reference; parameters and state_dict are the same either way.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir import ops, reference
from pyairir.nn.fast import like
from pyairir.ops.layout import dense_like, is_dense

RESTORMER_EPS = 1e-5


def _normalise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float, subtract_mean: bool,
               fast: bool) -> torch.Tensor:
    if not fast:
        return reference.layer_norm_channels(x, weight, bias, eps, subtract_mean)
    x = x if is_dense(x) else dense_like(x, x)
    return ops.layer_norm_channels(x, like(weight, x), like(bias, x), eps, subtract_mean)


class WithBiasLayerNorm(nn.Module):
    """Restormer's WithBias_LayerNorm, on (B, C, H, W) directly: keys `weight`, `bias` of shape (C,)."""

    def __init__(self, dim: int, fast: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalise(x, self.weight, self.bias, RESTORMER_EPS, True, self.fast)


class BiasFreeLayerNorm(nn.Module):
    """Restormer's BiasFree_LayerNorm, on (B, C, H, W) directly: key `weight` of shape (C,)."""

    def __init__(self, dim: int, fast: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalise(x, self.weight, None, RESTORMER_EPS, False, self.fast)


class LayerNorm(nn.Module):
    """Restormer's LayerNorm(dim, LayerNorm_type): `body` is WithBias (default) or BiasFree.

    Keys: `body.weight` (and `body.bias` for WithBias), as in the official code.
    """

    def __init__(self, dim: int, LayerNorm_type: str = "WithBias", fast: bool = False) -> None:  # noqa: N803
        super().__init__()
        if LayerNorm_type not in ("WithBias", "BiasFree"):  # (the official code takes any other as WithBias)
            raise ValueError(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {LayerNorm_type!r}")
        self.body: nn.Module = (BiasFreeLayerNorm if LayerNorm_type == "BiasFree" else WithBiasLayerNorm)(dim, fast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LayerNorm2d(nn.Module):
    """NAFNet's LayerNorm2d(channels, eps=1e-6): WithBias normalisation, keys `weight`, `bias` of shape (C,)."""

    def __init__(self, channels: int, eps: float = 1e-6, fast: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalise(x, self.weight, self.bias, self.eps, True, self.fast)
