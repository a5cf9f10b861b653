"""Argument checks shared by every layer. Each message names the argument,
what was expected and what came, and is raised as ValueError (TypeError for
a non-tensor)."""

from __future__ import annotations

import torch

FLOATING = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_image(x: object, name: str, where: str, channels: int | None = None) -> None:
    """Checks that `x` is a non-empty floating (B, C, H, W) tensor, with `channels` channels if given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{where}: {name} must be a 4-D (B, C, H, W) tensor, got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    if x.dtype not in FLOATING:
        raise ValueError(
            f"{where}: {name} must be a floating tensor (float32, float64, bfloat16 or float16), got {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(f"{where}: {name} must not be empty, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{where}: {name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")


def check_like(t: torch.Tensor, name: str, where: str, like: torch.Tensor, like_name: str) -> None:
    """Checks that tensor `t` has the dtype and device of `like` (the argument named `like_name`)."""
    if t.dtype != like.dtype or t.device != like.device:
        raise ValueError(f"{where}: {name} must have the dtype and device of {like_name} ({like.dtype}, "
                         f"{like.device}), got {t.dtype}, {t.device}")


def check_heads(heads: object, temperature: object, q: torch.Tensor, where: str) -> None:
    """Checks that `heads` divides the channels of q and that `temperature` is a tensor of one value
    per head, with q's dtype and device (the attention ops' learnable per-head temperature)."""
    channels = q.shape[1]
    if not isinstance(heads, int) or heads <= 0 or channels % heads:
        raise ValueError(f"{where}: heads must divide the channels of q ({channels}), got {heads}")
    if not isinstance(temperature, torch.Tensor) or temperature.numel() != heads:
        shape = tuple(temperature.shape) if isinstance(temperature, torch.Tensor) else type(temperature).__name__
        raise ValueError(f"{where}: temperature must hold one value per head ({heads}), got {shape}")
    check_like(temperature, "temperature", where, q, "q")


def check_channel_vector(t: object, name: str, where: str, x: torch.Tensor) -> None:
    """Checks that `t` is a 1-D tensor with one value per channel of `x`, on its device and of its dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    channels = x.shape[1]
    if t.dim() != 1 or t.shape[0] != channels:
        raise ValueError(
            f"{where}: {name} must have shape ({channels},) (one value per channel of x), got {tuple(t.shape)}"
        )
    if t.dtype != x.dtype:
        raise ValueError(f"{where}: {name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{where}: {name} must be on the device of x ({x.device}), got {t.device}")


def check_depthwise_filter(dw_weight: object, dw_bias: object, channels: int, where: str, like: torch.Tensor,
                           like_name: str, per: str) -> None:
    """Checks an optional 3x3 depthwise filter dw_weight (channels, 1, 3, 3) and bias dw_bias
    (channels,) that an op fuses: tensors of like's dtype and device (`per` says what a filter
    channel belongs to, for the message); a bias needs a filter."""
    check_weight_and_bias(dw_weight, dw_bias, ("dw_weight", "dw_bias"), ((channels, 1, 3, 3), (channels,)),
                          (f"a 3x3 depthwise filter {per}", f"one value {per}"), where, like, like_name)


def check_weight_and_bias(weight: object, bias: object, names: tuple[str, str], shapes: tuple[tuple, tuple],
                          whats: tuple[str, str], where: str, like: torch.Tensor, like_name: str) -> None:
    """Checks an op's optional weight and bias (named `names`, of `shapes`, described by `whats` in
    the message): tensors of like's dtype and device; a bias needs a weight."""
    if weight is None:
        if bias is not None:
            raise ValueError(f"{where}: {names[1]} given without {names[0]}")
        return
    for name, t, shape, what in zip(names, (weight, bias), shapes, whats):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: {name} must have shape {shape} ({what}), got {tuple(t.shape)}")
        check_like(t, name, where, like, like_name)
