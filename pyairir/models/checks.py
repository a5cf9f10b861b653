"""Input checks of the backbones' forward: clear errors instead of a failed concat deep inside."""

from __future__ import annotations

import torch
from torch import nn

from pyairir._validation import check_image


def check_model_input(x: torch.Tensor, model: str, channels: int, multiple: int = 1) -> None:
    """Checks that x is a (B, channels, H, W) floating image with H and W multiples of `multiple`."""
    check_image(x, "inp_img", model, channels)
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model}: inp_img height and width must be multiples of {multiple}, got {h}x{w}. The official "
            f"forward does not pad; pyairir.eval.restore(model, image) reflect-pads to a multiple of "
            f"{multiple} and crops back."
        )


def size_multiple(model: nn.Module) -> int:
    """The multiple the height and width of `model`'s input should have: its backbone's
    size_multiple, and for a NAFNet (which pads itself) the multiple it pads to."""
    backbone = getattr(model, "backbone", model)
    return getattr(backbone, "padder_size", None) or getattr(backbone, "size_multiple", 1)
