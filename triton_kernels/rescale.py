"""Scaling rows of q and k by powers of two so that the attention kernels' dot products and
squared norms stay in range (csrc/rescale.h, the same rule): a cosine does not change when a row
is multiplied by a positive number, so mdta and proxy_attention may compute it from x * s, with
s = 2^-ceil(log2 max|x_row|) for a row whose largest entry is 1 or more and 1 for the others."""

from __future__ import annotations

import torch

RESCALE_NORM = 2.0 ** 40  # above it a squared norm or dC / (|q| |k|) starts to leave fp32's range


def power_of_two_scale(largest: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """s for rows whose largest |entry| is `largest` (any shape)."""
    m = largest.double()
    return torch.where(m >= 1, torch.exp2(-torch.ceil(torch.log2(m))), torch.ones_like(m)).to(dtype)


def needs_rescale(q_norm: torch.Tensor, k_norm: torch.Tensor) -> bool:
    """Whether norms this large (or inf, or NaN) call for the scaled path."""
    return not (q_norm.max().item() < RESCALE_NORM and k_norm.max().item() < RESCALE_NORM)
