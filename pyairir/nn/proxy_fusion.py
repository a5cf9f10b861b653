"""SIPL's Proxy Fusion building blocks (Wu et al., "Boosting All-in-One Image Restoration via
Self-Improved Privilege Learning", Eq. 3-4), with the official parameter names
(CrossAttention_RestormerV2, DualGate_FeedForward, CrossTransformerRestormer_Block_PIM).

    F'_PI   = CrossAttention(Q = PD,  K = V = F_PI)        (Eq. 3)
    F_fused = CrossAttention(Q = F_d, K = V = F'_PI)       (Eq. 4)

each CrossAttention being a ProxyFusionBlock: LayerNorm on both inputs, cosine (L2-normalised)
spatial attention, a residual from the normalised query, then LayerNorm + dual-gate FFN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops, reference
from pyairir.nn.fast import compute_dtype, conv, like, residual
from pyairir.nn.layer_norm import LayerNorm


class CrossAttention(nn.Module):
    """Spatial (token) cross-attention with L2-normalised queries and keys and a learnable
    per-head temperature t: softmax((q̂ k̂^T) t) v over the pixels of x_kv, per query pixel.

    Keys: temperature (heads, 1, 1); q (C, C, 1, 1), q_dwconv (C, 1, 3, 3); kv (2C, C, 1, 1),
    kv_dwconv (2C, 1, 3, 3); project_out (C, C, 1, 1).
    forward: x_q (B, C, Hq, Wq), x_kv (B, C, Hk, Wk) -> (B, C, Hq, Wq).
    fast: the flash-style kernel pyairir.ops.proxy_attention, memory O(HqWq + HkWk) instead of
    the (HqWq x HkWk) attention map.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, fast: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias)
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.fast = fast

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        k, v = conv(self.kv_dwconv, conv(self.kv, x_kv)).chunk(2, dim=1)
        q = conv(self.q_dwconv, conv(self.q, x_q))
        if self.fast:
            out = ops.proxy_attention(q, k, v, like(self.temperature, q), self.num_heads)
        else:
            out = reference.proxy_attention(q, k, v, self.temperature, self.num_heads)
        return conv(self.project_out, out)


class DualGateFeedForward(nn.Module):
    """LLFormer's dual-gated FFN: project_out(gelu(x2) * x1 + gelu(x1) * x2), x1, x2 the halves of
    dwconv(project_in(x)). Keys: project_in (2h, C), dwconv (2h, 1, 3, 3), project_out (C, h)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = conv(self.dwconv, conv(self.project_in, x)).chunk(2, dim=1)
        return conv(self.project_out, F.gelu(x2) * x1 + F.gelu(x1) * x2)


class ProxyFusionBlock(nn.Module):
    """One cross block of Proxy Fusion (official CrossTransformerRestormer_Block_PIM with equal
    query and key/value channels):

        q, kv = norm11(x_q), norm12(x_kv);   y = q + attn(q, kv);   out = y + ffn(norm2(y))

    (the residual adds the *normalised* query, as the official block does).
    Keys: norm11, norm12, attn (CrossAttention), norm2, ffn (DualGateFeedForward).
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.0, bias: bool = False,
                 LayerNorm_type: str = "WithBias") -> None:  # noqa: N803
        super().__init__()
        self.norm11 = LayerNorm(dim, LayerNorm_type)
        self.norm12 = LayerNorm(dim, LayerNorm_type)
        self.attn = CrossAttention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = DualGateFeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        """x_q (B, C, Hq, Wq) attends to x_kv (B, C, Hk, Wk) -> (B, C, Hq, Wq). Fast: a bf16 x_q computes
        in float32 where the CPU has no bf16 arithmetic (pyairir.nn.fast.compute_dtype); the output is
        in x_q's dtype."""
        dtype = compute_dtype(self.attn.fast, x_q)
        if dtype != x_q.dtype:
            return self.forward(x_q.to(dtype), x_kv.to(dtype)).to(x_q.dtype)
        x_q = self.norm11(x_q)
        y = residual(x_q, self.attn(x_q, self.norm12(x_kv)), self.attn.fast)
        return residual(y, self.ffn(self.norm2(y)), self.attn.fast)
