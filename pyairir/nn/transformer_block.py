"""Restormer's Transformer block: x + MDTA(LN(x)), then + GDFN(LN(x))."""

from __future__ import annotations

import torch
from torch import nn

from pyairir.nn.fast import inference_memory, residual
from pyairir.nn.gdfn import GDFN
from pyairir.nn.layer_norm import LayerNorm
from pyairir.nn.mdta import MDTA


class TransformerBlock(nn.Module):
    """Keys: norm1.body.*, attn.* (MDTA), norm2.body.*, ffn.* (GDFN). (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:  # noqa: N803
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + attn(norm1(x)), then x + ffn(norm2(x)) (Restormer Fig. 2); each norm runs inside its
        sublayer, which lets fast inference band it with the sublayer's projections."""
        fast = self.attn.fast
        with inference_memory(fast):
            x = residual(x, self.attn(x, self.norm1), fast)
            return residual(x, self.ffn(x, self.norm2), fast)
