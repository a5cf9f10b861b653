"""Running a backbone on an image of any size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir._validation import check_image

DEFAULT_MULTIPLE = 8


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """image (B, C, H, W) padded at its right and bottom to multiples of `multiple`, by reflection
    as the official Restormer test scripts do (by edge replication where the image is too small
    to reflect); the image itself if no padding is needed."""
    h, w = image.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def restore(model: nn.Module, image: torch.Tensor, multiple: int | None = None) -> torch.Tensor:
    """Restores image (B, C, H, W) or (C, H, W) of any H, W with `model`, without gradients.

    The image is padded to multiples of `multiple` (default: the model's `size_multiple`, else 8)
    with pad_to_multiple, run, and cropped back. Returns a tensor of the input's shape.
    """
    batched = image.dim() == 4
    if image.dim() == 3:
        image = image.unsqueeze(0)
    check_image(image, "image", "pyairir.eval.restore")
    multiple = multiple or getattr(model, "size_multiple", DEFAULT_MULTIPLE)
    h, w = image.shape[-2:]
    with torch.no_grad():
        out = model(pad_to_multiple(image, multiple))[:, :, :h, :w]
    return out if batched else out.squeeze(0)
