"""Gated-Dconv Feed-Forward Network (Restormer, official name `FeedForward`).

    X̂ = W_p^0 Gating(X) + X,  Gating(X) = φ(W_d^1 W_p^1 LN(X)) ⊙ W_d^2 W_p^2 LN(X)   (Restormer Eq. 3)
with φ the exact (erf) GELU; the residual and LN live in TransformerBlock.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir import ops, reference
from pyairir.nn.banded import in_bands, wants_bands
from pyairir.nn.fast import compute_dtype, conv, inference_memory, like


class GDFN(nn.Module):
    """Keys: project_in (2h, C, 1, 1); dwconv (2h, 1, 3, 3); project_out (C, h, 1, 1); h = int(C * expansion)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, fast: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.fast = fast

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W), of norm(x) if a per-pixel `norm` is given (TransformerBlock
        passes its norm2). fast=True fuses dwconv and the gate in one op and, without autograd, runs
        large images in bands of rows, the norm included (the same values, a fraction of the memory).
        A bf16 x computes in float32 where the CPU has no bf16 arithmetic
        (pyairir.nn.fast.compute_dtype); the output is in x's dtype."""

        dtype = compute_dtype(self.fast, x)  # float32 for a bf16 model on a CPU without bf16 arithmetic

        def feed_forward(t: torch.Tensor) -> torch.Tensor:
            t = t.to(dtype)
            return self._gated_ffn(t if norm is None else norm(t)).to(x.dtype)

        with inference_memory(self.fast):  # also when accelerate() puts GDFN in an official block
            return in_bands(feed_forward, x) if wants_bands(self.fast, x) else feed_forward(x)

    def _gated_ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = conv(self.project_in, x)
        if self.fast:
            x = ops.gated_gelu(x, like(self.dwconv.weight, x), like(self.dwconv.bias, x), True)
        else:
            x = reference.gated_gelu(self.dwconv(x), None, None, True)
        return conv(self.project_out, x)


FeedForward = GDFN  # the official class name
