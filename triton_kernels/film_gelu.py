"""film_gelu in Triton: one program per (sample, channel block, pixel block) tile. The gamma/beta
gradients are written as one partial sum per program over its pixels and summed by torch in a
fixed order (deterministic). Accumulates in float32 (float64 for float64 inputs)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tile(C, P, stride_c, stride_p, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = (channels < C)[:, None] & (pixels < P)[None, :]
    offsets = b * C * P + channels[:, None].to(tl.int64) * stride_c + pixels[None, :].to(tl.int64) * stride_p
    return b, channels, mask, offsets


@triton.jit
def _forward_kernel(X, G, Bt, Y, C, P, stride_c, stride_p, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr):
    b, channels, mask, offsets = _tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    cmask = channels < C
    gamma = tl.load(G + b * C + channels, mask=cmask, other=0.0).to(ACC)
    beta = tl.load(Bt + b * C + channels, mask=cmask, other=0.0).to(ACC)
    z = gamma[:, None] * tl.load(X + offsets, mask=mask, other=0.0).to(ACC) + beta[:, None]
    y = z * 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(DY, X, G, Bt, DX, PARTIAL, C, P, stride_c, stride_p, ACC: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    b, channels, mask, offsets = _tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    cmask = channels < C
    gamma = tl.load(G + b * C + channels, mask=cmask, other=0.0).to(ACC)
    beta = tl.load(Bt + b * C + channels, mask=cmask, other=0.0).to(ACC)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
    z = gamma[:, None] * x + beta[:, None]
    cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
    dz = tl.load(DY + offsets, mask=mask, other=0.0).to(ACC) * (cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327)
    tl.store(DX + offsets, (gamma[:, None] * dz).to(DX.dtype.element_ty), mask=mask)
    row = (tl.program_id(0) * tl.num_programs(2) + tl.program_id(2)).to(tl.int64) * 2 * C
    tl.store(PARTIAL + row + channels, tl.sum(x * dz, axis=1), mask=cmask)
    tl.store(PARTIAL + row + C + channels, tl.sum(dz, axis=1), mask=cmask)


def _launch(x: torch.Tensor):
    B, C, H, W = x.shape
    P = H * W
    strides = (1, C) if not x.is_contiguous() else (P, 1)
    block_c, block_p = min(32, triton.next_power_of_2(C)), 64
    grid = (triton.cdiv(P, block_p), triton.cdiv(C, block_c), B)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    return C, P, strides, grid, acc, block_c, block_p


def forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    C, P, strides, grid, acc, block_c, block_p = _launch(x)
    y = torch.empty_like(x)
    _forward_kernel[grid](x, gamma, beta, y, C, P, *strides, ACC=acc, BLOCK_C=block_c, BLOCK_P=block_p)
    return y


def backward(grad_out, x, gamma, beta):
    C, P, strides, grid, acc, block_c, block_p = _launch(x)
    dx = torch.empty_like(x)
    partial = torch.empty((grid[0], x.shape[0], 2, C), dtype=torch.float64 if x.dtype == torch.float64
                          else torch.float32, device=x.device)
    _backward_kernel[grid](grad_out, x, gamma, beta, dx, partial, C, P, *strides, ACC=acc, BLOCK_C=block_c,
                           BLOCK_P=block_p)
    sums = partial.sum(dim=0)  # (B, 2, C), over the pixel blocks in order
    return dx, sums[:, 0].to(gamma.dtype).clone(), sums[:, 1].to(beta.dtype).clone()
