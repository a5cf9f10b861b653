"""Restoring images of any size one tile at a time, in bounded memory."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from pyairir.eval.inference import restore


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles tiled_restore runs for an image of height x width."""
    return len(_starts(height, tile, overlap)) * len(_starts(width, tile, overlap))


def _seams(starts: list[int], tile: int, length: int) -> list[int]:
    """The middle of each overlap between neighbouring tiles, with the image borders at both ends:
    tile i is the nearest to the pixels between seams i and i + 1."""
    return [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]


def _weights(starts: list[int], tile: int, length: int, ramp: int) -> list[torch.Tensor]:
    """Per tile, its weight at each of its positions along one axis, (min(tile, length),) float64.

    At each seam the weight of the left tile falls linearly from 1 to 0 over `ramp` pixels centred
    on the seam while that of the right tile rises, so neighbours' weights sum to 1; with ramp 0
    each pixel comes from its nearest tile alone."""
    seams = _seams(starts, tile, length)
    weights = []
    for i, start in enumerate(starts):
        p = torch.arange(start, start + min(tile, length), dtype=torch.float64) + 0.5
        w = torch.ones_like(p)
        if i > 0:
            w *= ((p - seams[i]) / ramp + 0.5).clamp(0, 1) if ramp else (p >= seams[i]).double()
        if i + 1 < len(starts):
            w *= ((seams[i + 1] - p) / ramp + 0.5).clamp(0, 1) if ramp else (p < seams[i + 1]).double()
        weights.append(w)
    return weights


def tiled_restore(model: nn.Module, image: torch.Tensor, tile: int = 256, overlap: int = 32,
                  multiple: int | None = None, blend: bool = True, progress: bool = False) -> torch.Tensor:
    """Restores image (B, C, H, W) or (C, H, W) tile by tile, without gradients.

    Tiles of `tile` x `tile` pixels overlap by at least `overlap`. Where two tiles overlap, the
    output cross-fades linearly from one to the other over the middle overlap/2 pixels (`blend`),
    so no seam shows even for models whose result depends on the whole tile; with blend=False it
    switches at the middle of the overlap. Either way an output pixel only takes values computed
    at least overlap/4 (blend) or overlap/2 (no blend) pixels from a tile edge (image borders
    excepted), so a model that only looks that far around (a conv net of that receptive radius)
    gives exactly its untiled result. Models with global operations (MDTA's channel attention,
    NAFNet's pooled channel attention, PromptIR's prompt gate) see each tile alone and differ a
    little. Memory: one tile's activations at a time, plus the output and a weight map.
    progress: a progress bar over the tiles.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tiled_restore: need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    batched = image.dim() == 4
    x = image if batched else image[None]
    h, w = x.shape[-2:]
    ramp = overlap // 2 if blend else 0
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    row_weights, col_weights = _weights(rows, tile, h, ramp), _weights(cols, tile, w, ramp)
    out = total = None
    tiles = [(top, wy, left, wx) for top, wy in zip(rows, row_weights) for left, wx in zip(cols, col_weights)]
    for top, wy, left, wx in tqdm(tiles, desc="tiles", unit="tile", disable=not progress, leave=False):
        patch = restore(model, x[..., top: top + tile, left: left + tile], multiple)
        if out is None:
            out = torch.zeros((x.shape[0], patch.shape[1], h, w), dtype=patch.dtype, device=patch.device)
            total = torch.zeros((h, w), dtype=torch.promote_types(patch.dtype, torch.float32), device=patch.device)
        (y0, y1), (x0, x1) = _support(wy), _support(wx)
        weight = (wy[y0:y1, None] * wx[None, x0:x1]).to(total)
        out[..., top + y0: top + y1, left + x0: left + x1] += patch[..., y0:y1, x0:x1] * weight.to(patch.dtype)
        total[top + y0: top + y1, left + x0: left + x1] += weight
    out = out / total.to(out.dtype)
    return out if batched else out[0]


def _support(weight: torch.Tensor) -> tuple[int, int]:
    """The range of positions where a tile's 1-D weight is not zero."""
    used = weight.nonzero()[:, 0]
    return int(used[0]), int(used[-1]) + 1
