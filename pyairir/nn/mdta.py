"""Multi-Dconv Head Transposed Attention (Restormer, official name `Attention`).

With q, k, v from a 1x1 conv followed by a 3x3 depthwise conv, split into
`num_heads` groups of C/heads channels and flattened over the HW pixels:
    Attention(Q, K, V) = V · softmax(K̂ · Q̂ / alpha)     (Restormer Eq. 2)
where Q̂, K̂ are L2-normalised over the pixels and 1/alpha is the learnable
per-head `temperature`; the attention map is (C/heads x C/heads).
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir import ops, reference
from pyairir.nn.banded import in_bands, wants_bands
from pyairir.nn.fast import compute_dtype, conv, inference_memory, like


class MDTA(nn.Module):
    """Keys: temperature (heads, 1, 1); qkv (3C, C, 1, 1); qkv_dwconv (3C, 1, 3, 3); project_out (C, C, 1, 1)."""

    def __init__(self, dim: int, num_heads: int, bias: bool, fast: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MDTA: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.fast = fast

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W); attends to norm(x) if a per-pixel `norm` is given
        (TransformerBlock passes its norm1). fast=True without autograd hands qkv_dwconv and
        project_out to the mdta op, which fuses the first into its passes over the pixels (the
        convolved q, k, v are never written whole) and folds the second into the attention map
        (one C x C product per pixel); it projects large images in bands of rows
        (pyairir.nn.banded), the norm included: neither the normalised image nor its 3C-channel
        projection exists whole. With autograd the convolutions stay apart: the fused op's backward
        would compute them again. A bf16 x computes in float32 where the CPU has no bf16
        arithmetic (pyairir.nn.fast.compute_dtype); the output is in x's dtype."""
        fuse = self.fast and not torch.is_grad_enabled()
        dtype = compute_dtype(self.fast, x)  # float32 for a bf16 model on a CPU without bf16 arithmetic

        def project(t: torch.Tensor) -> torch.Tensor:
            t = t.to(dtype)
            qkv = conv(self.qkv, t if norm is None else norm(t))
            return qkv if fuse else self.qkv_dwconv(qkv)

        with inference_memory(self.fast):  # also when accelerate() puts MDTA in an official block
            qkv = in_bands(project, x, context=0 if fuse else 1) if wants_bands(self.fast, x) else project(x)
            q, k, v = qkv.chunk(3, dim=1)
            del qkv  # q, k, v are views: their memory goes as soon as the attention is done
            if fuse:
                return ops.mdta(q, k, v, like(self.temperature, q), self.num_heads, like(self.qkv_dwconv.weight, q),
                                like(self.qkv_dwconv.bias, q), like(self.project_out.weight, q),
                                like(self.project_out.bias, q)).to(x.dtype)
            if self.fast:
                x = ops.mdta(q, k, v, like(self.temperature, q), self.num_heads)
            else:
                x = reference.mdta(q, k, v, self.temperature, self.num_heads)
            del q, k, v
            return self.project_out(x)


Attention = MDTA  # the official class name
