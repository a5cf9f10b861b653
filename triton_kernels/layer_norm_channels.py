"""layer_norm_channels in Triton: one program normalises a tile of BLOCK_P
pixels of one image across all C channels (BLOCK_C >= C, masked).

Accumulates in float32 (float64 for float64 inputs). The weight/bias gradient
is written as one partial row per program and summed by torch in a fixed
order, so it is deterministic."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Offsets and mask of this program's (BLOCK_C, BLOCK_P) tile."""
    b = tl.program_id(1).to(tl.int64)
    channels = tl.arange(0, BLOCK_C)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = (channels[:, None] < C) & (pixels[None, :] < P)
    offsets = b * stride_b + channels[:, None].to(tl.int64) * stride_c + pixels[None, :].to(tl.int64) * stride_p
    return offsets, mask, channels


@triton.jit
def _statistics(x, mask, C, eps):
    """Per-pixel mean and 1/sqrt(var + eps) of a (BLOCK_C, BLOCK_P) tile."""
    mean = tl.sum(x, axis=0) / C
    centred = tl.where(mask, x - mean[None, :], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / C + eps)
    return mean, centred * rstd[None, :], rstd


@triton.jit
def _forward_kernel(
    X, W, Bias, Y, C, P, stride_b, stride_c, stride_p, eps,
    HAS_BIAS: tl.constexpr, SUBTRACT_MEAN: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    offsets, mask, channels = _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
    mean, centred, rstd = _statistics(x, mask, C, eps)
    w = tl.load(W + channels, mask=channels < C, other=0.0).to(ACC)
    if SUBTRACT_MEAN:
        y = centred * w[:, None]
    else:
        y = x * rstd[None, :] * w[:, None]
    if HAS_BIAS:
        y += tl.load(Bias + channels, mask=channels < C, other=0.0).to(ACC)[:, None]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    G, X, W, DX, DW_PARTIAL, DB_PARTIAL, C, P, stride_b, stride_c, stride_p, eps,
    SUBTRACT_MEAN: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    offsets, mask, channels = _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
    dy = tl.load(G + offsets, mask=mask, other=0.0).to(ACC)
    w = tl.load(W + channels, mask=channels < C, other=0.0).to(ACC)
    mean, centred, rstd = _statistics(x, mask, C, eps)
    if SUBTRACT_MEAN:
        normalised = centred
    else:
        normalised = tl.where(mask, x * rstd[None, :], 0.0)
    g = dy * w[:, None]
    mean_g = tl.sum(g, axis=0) / C
    mean_gn = tl.sum(g * normalised, axis=0) / C
    if SUBTRACT_MEAN:
        dx = rstd[None, :] * (g - mean_g[None, :] - centred * mean_gn[None, :])
    else:
        dx = rstd[None, :] * (g - centred * mean_gn[None, :])
    tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)
    row = (tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)).to(tl.int64) * C
    tl.store(DW_PARTIAL + row + channels, tl.sum(dy * normalised, axis=1), mask=channels < C)
    tl.store(DB_PARTIAL + row + channels, tl.sum(dy, axis=1), mask=channels < C)


def _launch_geometry(x: torch.Tensor):
    B, C, H, W = x.shape
    P = H * W
    channels_last = not x.is_contiguous()  # callers pass x dense in NCHW or channels_last
    strides = (C * P, 1, C) if channels_last else (C * P, P, 1)
    block_c = triton.next_power_of_2(C)
    block_p = max(1, min(64, 4096 // block_c))
    grid = (triton.cdiv(P, block_p), B)
    accumulate = tl.float64 if x.dtype == torch.float64 else tl.float32
    return C, P, strides, block_c, block_p, grid, accumulate


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float, subtract_mean: bool
) -> torch.Tensor:
    """See pyairir.reference.layer_norm_channels; x dense NCHW or channels_last."""
    C, P, strides, block_c, block_p, grid, accumulate = _launch_geometry(x)
    y = torch.empty_like(x)
    _forward_kernel[grid](
        x, weight, weight if bias is None else bias, y, C, P, *strides, eps,
        HAS_BIAS=bias is not None, SUBTRACT_MEAN=subtract_mean, ACC=accumulate,
        BLOCK_C=block_c, BLOCK_P=block_p,
    )
    return y


def backward(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float, subtract_mean: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. (x, weight, bias); grad_out dense in x's layout."""
    C, P, strides, block_c, block_p, grid, accumulate = _launch_geometry(x)
    grad_x = torch.empty_like(x)
    partial_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = torch.empty((2, grid[0] * grid[1], C), dtype=partial_dtype, device=x.device)
    _backward_kernel[grid](
        grad_out, x, weight, grad_x, partial[0], partial[1], C, P, *strides, eps,
        SUBTRACT_MEAN=subtract_mean, ACC=accumulate, BLOCK_C=block_c, BLOCK_P=block_p,
    )
    return grad_x, partial[0].sum(dim=0).to(weight.dtype), partial[1].sum(dim=0).to(weight.dtype)
