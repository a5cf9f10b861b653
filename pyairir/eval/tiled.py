"""Restoring images of any size one tile at a time, in bounded memory."""

from __future__ import annotations

import torch
from torch import nn

from pyairir.eval.inference import restore


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _owned(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """The interval each tile contributes: neighbours split their overlap at its middle, so every
    output pixel comes from the tile in which it lies farthest from a tile edge."""
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def tiled_restore(model: nn.Module, image: torch.Tensor, tile: int = 256, overlap: int = 32,
                  multiple: int | None = None) -> torch.Tensor:
    """Restores image (B, C, H, W) or (C, H, W) tile by tile, without gradients.

    Tiles of `tile` x `tile` pixels overlap by at least `overlap`; each output pixel is taken from
    the one tile in which it is at least overlap/2 from an edge (image borders excepted), so a
    model that only looks `overlap`/2 pixels around (a conv net of that receptive radius) gives
    exactly its untiled result. Models with global operations (MDTA's channel attention, NAFNet's
    pooled channel attention, PromptIR's prompt gate) see each tile alone and differ a little.
    Memory: one tile's activations at a time.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tiled_restore: need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    batched = image.dim() == 4
    x = image if batched else image[None]
    h, w = x.shape[-2:]
    out = None
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for top, (y0, y1) in zip(rows, _owned(rows, tile, h)):
        for left, (x0, x1) in zip(cols, _owned(cols, tile, w)):
            patch = restore(model, x[..., top: top + tile, left: left + tile], multiple)
            if out is None:
                out = torch.empty((x.shape[0], patch.shape[1], h, w), dtype=patch.dtype, device=patch.device)
            out[..., y0:y1, x0:x1] = patch[..., y0 - top: y1 - top, x0 - left: x1 - left]
    return out if batched else out[0]
