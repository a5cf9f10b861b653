"""Test-time Local Statistics Converter (TLSC; Chu et al., "Revisiting Global
Statistics Aggregation for Improving Image Restoration"), as NAFNetLocal uses it.

A network trained on crops pools over the whole crop; at test time on a large
image the global average sees different statistics. TLSC replaces the global
average by a local mean over a window the size the training crop had at that
level (1.5x it, in NAFNet's configuration), computed from an integral image,
and pads the result back to the input size by replicating its border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LocalAvgPool2d(nn.Module):
    """Local mean over a (kh, kw) window; the global mean when the window covers the whole input.

    x (B, C, H, W) -> (B, C, H, W), or (B, C, 1, 1) when kh >= H and kw >= W.
    """

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        kh, kw = min(h, kh), min(w, kw)
        integral = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))  # (B, C, H + 1, W + 1)
        window_sums = (integral[..., kh:, kw:] - integral[..., :-kh, kw:]
                       - integral[..., kh:, :-kw] + integral[..., :-kh, :-kw])
        local_mean = window_sums / (kh * kw)  # (B, C, H - kh + 1, W - kw + 1)
        pad_h, pad_w = h - local_mean.shape[-2], w - local_mean.shape[-1]
        return F.pad(local_mean, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), mode="replicate")
