"""SIPL's iterative self-refinement on images of any size, whole or tile by tile."""

from __future__ import annotations

import torch
from torch import nn

from pyairir._validation import check_image
from pyairir.eval.inference import DEFAULT_MULTIPLE, pad_to_multiple
from pyairir.eval.tiled import tiled_restore


class _WithDictionaries(nn.Module):
    """A SIPL model whose forward uses fused dictionaries computed beforehand from a whole image."""

    def __init__(self, model: nn.Module, proxies: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model, self.proxies = model, proxies
        self.size_multiple = model.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, proxies=self.proxies)


def self_refine(model: nn.Module, image: torch.Tensor, iterations: int, tile: int | None = None,
                overlap: int = 32, loop: str = "paper", progress: bool = False) -> list[torch.Tensor]:
    """[I^(0), ..., I^(iterations)] of a SIPL model for image (B, 3, H, W) of any H, W.

    Whole images (tile None): model.restore on the padded image (the degraded image encoded once).
    Tiles (paper loop only): every pass runs tile by tile (pyairir.eval.tiled_restore), but the
    Privileged Dictionary stays global: each refinement first fuses the dictionaries with the
    privileged features of the whole previous iterate (SIPL Eq. 3; its encoder runs on the whole
    image, the fusion attends over all of its pixels), then every tile's decoder attends to those
    same fused dictionaries (Eq. 4). Tiles differ from the untiled result only as any tiled
    backbone does (see tiled_restore); memory is that of one tile's pass plus one encoder pass of
    the whole image. progress: a progress bar over each tiled pass's tiles.
    """
    check_image(image, "image", "pyairir.eval.self_refine")
    if iterations < 0:
        raise ValueError(f"pyairir.eval.self_refine: iterations must be >= 0, got {iterations}")
    multiple = getattr(model, "size_multiple", DEFAULT_MULTIPLE)
    h, w = image.shape[-2:]
    model.eval()
    with torch.no_grad():
        if tile is None:
            return [x[..., :h, :w] for x in model.restore(pad_to_multiple(image, multiple), iterations, loop)]
        if loop != "paper":
            raise ValueError(f"pyairir.eval.self_refine: tiles take the paper loop only, got loop={loop!r}")
        outputs = [tiled_restore(model, image, tile, overlap, progress=progress)]
        for _ in range(iterations):
            proxies = model.fused_dictionaries(pad_to_multiple(outputs[-1], multiple))
            outputs.append(tiled_restore(_WithDictionaries(model, proxies), image, tile, overlap, progress=progress))
    return outputs
