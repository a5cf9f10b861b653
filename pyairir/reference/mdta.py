from __future__ import annotations

import torch
import torch.nn.functional as F


def mdta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int,
         dw_weight: torch.Tensor | None = None, dw_bias: torch.Tensor | None = None,
         project_weight: torch.Tensor | None = None, project_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Restormer's transposed attention core (Restormer Eq. 2), as the official Attention.forward computes it.

    q, k, v (B, C, H, W) are split into `heads` groups of d = C / heads channels over the N = H * W
    pixels; q and k are L2-normalised over the pixels; per head,
    out = softmax((q̂ k̂^T) * temperature[h]) v, the attention map being (d x d). Returns (B, C, H, W).
    With dw_weight (3C, 1, 3, 3) and dw_bias (3C,), q, k, v are first convolved with their thirds of
    that depthwise filter (MDTA's qkv_dwconv, padding 1): see `convolved`. With project_weight
    (C, C, 1, 1) and project_bias (C,), the output is then projected by that 1x1 convolution
    (MDTA's project_out).
    """
    if dw_weight is not None:
        q, k, v = convolved(q, k, v, dw_weight, dw_bias)
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attention = ((q @ k.transpose(-2, -1)) * temperature.reshape(1, heads, 1, 1)).softmax(dim=-1)
    out = (attention @ v).reshape(b, c, h, w)
    return out if project_weight is None else F.conv2d(out, project_weight, project_bias)


def convolved(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dw_weight: torch.Tensor,
              dw_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, C, H, W) each convolved with its third (in that order) of the 3x3 depthwise filter
    dw_weight (3C, 1, 3, 3) and dw_bias (3C,), padding 1: what qkv_dwconv gives before qkv.chunk(3)."""
    c = q.shape[1]
    weights = dw_weight.split(c)
    biases = dw_bias.split(c) if dw_bias is not None else (None,) * 3
    return tuple(F.conv2d(t, weight, bias, padding=1, groups=c) for t, weight, bias in zip((q, k, v), weights, biases))
