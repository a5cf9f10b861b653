"""Fast inference on large images in bands of rows, for the layers whose wide intermediate
tensors would otherwise exist for the whole image at once (GDFN's 2h = 5.3 C hidden channels,
MDTA's 3 C qkv projections). Exact: each band is computed with the rows of context its
receptive field reads, and those context rows' own outputs are discarded."""

from __future__ import annotations

from typing import Callable

import torch

from pyairir.ops import layout

# Images larger than twice this many pixels run in bands of rows of about this many pixels.
BAND_PIXELS = 1 << 15


def wants_bands(fast: bool, x: torch.Tensor) -> bool:
    """Whether a fast module should band x: no autograd (inference) and a large image."""
    return fast and not torch.is_grad_enabled() and x.shape[-2] * x.shape[-1] > 2 * BAND_PIXELS


def in_bands(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, context: int = 1) -> torch.Tensor:
    """fn(x) for x (B, C, H, W), computed on bands of rows, each with `context` rows above and
    below (fn must read at most that far and keep H, W); the output is dense in x's layout."""
    h, w = x.shape[-2:]
    rows = max(1, BAND_PIXELS // w)
    out = None
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        top, bottom = max(0, y0 - context), min(h, y1 + context)
        band = fn(x[..., top:bottom, :])[..., y0 - top: y1 - top, :]
        if out is None:
            out = torch.empty((x.shape[0], band.shape[1], h, w), dtype=band.dtype, device=band.device,
                              memory_format=layout.memory_format(x))
        out[..., y0:y1, :] = band
    return out
