"""gated_gelu in Triton: one program computes a (BLOCK_C channels of each half) x
(BLOCK_P pixels) tile of the output, gathering the nine 3x3 taps with masked loads.

The backward writes the gate's gradient dz (float32, float64 for float64
inputs) once, then forms the input gradient by correlating dz with the flipped
filter; the filter and bias gradients are written as one partial row per
program and summed by torch in a fixed order, so they are deterministic.
Accumulates in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SQRT1_2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


@triton.jit
def _pixels(P, W, BLOCK_P: tl.constexpr):
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    return pixels, pixels // W, pixels % W, pixels < P


@triton.jit
def _preactivation(X, base, channels, c_mask, py, px, p_mask, H, W, stride_c, stride_p, Wt, Bias,
                   HAS_CONV: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """z for the channels `channels` at the pixels (py, px): a (BLOCK_C, BLOCK_P) tile."""
    c_off = channels[:, None].to(tl.int64) * stride_c
    if not HAS_CONV:
        offsets = base + c_off + (py * W + px)[None, :].to(tl.int64) * stride_p
        return tl.load(X + offsets, mask=c_mask[:, None] & p_mask[None, :], other=0.0).to(ACC)
    z = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    if HAS_BIAS:
        z += tl.load(Bias + channels, mask=c_mask, other=0.0).to(ACC)[:, None]
    for tap in tl.static_range(9):
        sy = py + (tap // 3 - 1)
        sx = px + (tap % 3 - 1)
        valid = p_mask & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        offsets = base + c_off + (sy * W + sx)[None, :].to(tl.int64) * stride_p
        xv = tl.load(X + offsets, mask=c_mask[:, None] & valid[None, :], other=0.0).to(ACC)
        w = tl.load(Wt + channels * 9 + tap, mask=c_mask, other=0.0).to(ACC)
        z += xv * w[:, None]
    return z


@triton.jit
def _gate_inputs(X, Wt, Bias, Ch, H, W, stride_b, stride_c, stride_p,
                 HAS_CONV: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's tile: image b, its pixels and channels (of the first half), and z1, z2."""
    b = tl.program_id(2).to(tl.int64)
    pixels, py, px, p_mask = _pixels(H * W, W, BLOCK_P)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = channels < Ch
    base = b * stride_b
    z1 = _preactivation(X, base, channels, c_mask, py, px, p_mask, H, W, stride_c, stride_p, Wt, Bias,
                        HAS_CONV, HAS_BIAS, ACC, BLOCK_C, BLOCK_P)
    z2 = _preactivation(X, base, channels + Ch, c_mask, py, px, p_mask, H, W, stride_c, stride_p, Wt, Bias,
                        HAS_CONV, HAS_BIAS, ACC, BLOCK_C, BLOCK_P)
    return b, pixels, channels, c_mask[:, None] & p_mask[None, :], z1, z2


@triton.jit
def _cdf(a):
    return 0.5 * (1.0 + tl.erf(a * 0.7071067811865476))


@triton.jit
def _forward_kernel(
    X, Wt, Bias, Y, Ch, H, W, stride_b, stride_c, stride_p, out_stride_b, out_stride_c, out_stride_p,
    HAS_CONV: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    b, pixels, channels, mask, z1, z2 = _gate_inputs(X, Wt, Bias, Ch, H, W, stride_b, stride_c, stride_p,
                                                     HAS_CONV, HAS_BIAS, ACC, BLOCK_C, BLOCK_P)
    if GELU:
        z1 = z1 * _cdf(z1)
    offsets = (b * out_stride_b + channels[:, None].to(tl.int64) * out_stride_c
               + pixels[None, :].to(tl.int64) * out_stride_p)
    tl.store(Y + offsets, (z1 * z2).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gate_gradient_kernel(
    G, X, Wt, Bias, DZ, Ch, H, W, stride_b, stride_c, stride_p, out_stride_b, out_stride_c, out_stride_p,
    HAS_CONV: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dz = [dy z2 act'(z1), dy act(z1)], written in x's layout (strides of x)."""
    b, pixels, channels, mask, z1, z2 = _gate_inputs(X, Wt, Bias, Ch, H, W, stride_b, stride_c, stride_p,
                                                     HAS_CONV, HAS_BIAS, ACC, BLOCK_C, BLOCK_P)
    base = b * stride_b
    g_offsets = b * out_stride_b + channels[:, None].to(tl.int64) * out_stride_c + pixels[None, :].to(tl.int64) * out_stride_p
    dy = tl.load(G + g_offsets, mask=mask, other=0.0).to(ACC)
    if GELU:
        cdf = _cdf(z1)
        derivative = cdf + z1 * tl.exp(-0.5 * z1 * z1) * 0.3989422804014327
        act = z1 * cdf
    else:
        derivative = 1.0
        act = z1
    c_off = channels[:, None].to(tl.int64) * stride_c
    p_off = pixels[None, :].to(tl.int64) * stride_p
    tl.store(DZ + base + c_off + p_off, dy * z2 * derivative, mask=mask)
    tl.store(DZ + base + c_off + Ch * stride_c + p_off, dy * act, mask=mask)


@triton.jit
def _conv_backward_kernel(
    X, DZ, Wt, DX, PARTIAL, C2, H, W, stride_b, stride_c, stride_p, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_x = dz correlated with the flipped filter; partial rows [program][10][C2] of the
    filter gradient sum_p x(p + tap) dz(p) (rows 0..8) and the bias gradient sum_p dz(p) (row 9)."""
    b = tl.program_id(2).to(tl.int64)
    pixels, py, px, p_mask = _pixels(H * W, W, BLOCK_P)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = channels < C2
    mask = c_mask[:, None] & p_mask[None, :]
    base = b * stride_b
    c_off = channels[:, None].to(tl.int64) * stride_c
    dz = tl.load(DZ + base + c_off + pixels[None, :].to(tl.int64) * stride_p, mask=mask, other=0.0)
    row = ((tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)) * 10).to(tl.int64) * C2
    tl.store(PARTIAL + row + 9 * C2 + channels, tl.sum(dz, axis=1), mask=c_mask)
    gx = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for tap in tl.static_range(9):
        sy = py + (tap // 3 - 1)
        sx = px + (tap % 3 - 1)
        valid = p_mask & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        n_off = c_off + (sy * W + sx)[None, :].to(tl.int64) * stride_p
        n_mask = c_mask[:, None] & valid[None, :]
        xn = tl.load(X + base + n_off, mask=n_mask, other=0.0).to(ACC)
        tl.store(PARTIAL + row + tap * C2 + channels, tl.sum(xn * dz, axis=1), mask=c_mask)
        dzn = tl.load(DZ + base + n_off, mask=n_mask, other=0.0)
        w_flipped = tl.load(Wt + channels * 9 + (8 - tap), mask=c_mask, other=0.0).to(ACC)
        gx += dzn * w_flipped[:, None]
    tl.store(DX + base + c_off + pixels[None, :].to(tl.int64) * stride_p, gx.to(DX.dtype.element_ty), mask=mask)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides of t, dense NCHW or channels_last."""
    b, c, h, w = t.shape
    return (c * h * w, 1, c) if not t.is_contiguous() else (c * h * w, h * w, 1)


def _config(x: torch.Tensor, channels: int):
    block_c = min(32, triton.next_power_of_2(channels))
    block_p = 64
    accumulate = tl.float64 if x.dtype == torch.float64 else tl.float32
    grid = (triton.cdiv(x.shape[2] * x.shape[3], block_p), triton.cdiv(channels, block_c), x.shape[0])
    return block_c, block_p, accumulate, grid


def forward(x: torch.Tensor, dw_weight: torch.Tensor | None, dw_bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """See pyairir.reference.gated_gelu; x dense NCHW or channels_last."""
    B, C2, H, W = x.shape
    half = C2 // 2
    out = torch.empty((B, half, H, W), dtype=x.dtype, device=x.device)
    if not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    block_c, block_p, accumulate, grid = _config(x, half)
    _forward_kernel[grid](
        x, x if dw_weight is None else dw_weight, x if dw_bias is None else dw_bias, out, half, H, W,
        *_strides(x), *_strides(out),
        HAS_CONV=dw_weight is not None, HAS_BIAS=dw_bias is not None, GELU=gelu, ACC=accumulate,
        BLOCK_C=block_c, BLOCK_P=block_p,
    )
    return out


def backward(
    grad_out: torch.Tensor, x: torch.Tensor, dw_weight: torch.Tensor | None, dw_bias: torch.Tensor | None, gelu: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. (x, dw_weight, dw_bias); the last two are empty without dw_weight."""
    B, C2, H, W = x.shape
    half = C2 // 2
    partial_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dz = torch.empty_like(x, dtype=partial_dtype)
    block_c, block_p, accumulate, grid = _config(x, half)
    _gate_gradient_kernel[grid](
        grad_out, x, x if dw_weight is None else dw_weight, x if dw_bias is None else dw_bias, dz, half, H, W,
        *_strides(x), *_strides(grad_out),
        HAS_CONV=dw_weight is not None, HAS_BIAS=dw_bias is not None, GELU=gelu, ACC=accumulate,
        BLOCK_C=block_c, BLOCK_P=block_p,
    )
    if dw_weight is None:
        return dz.to(x.dtype), x.new_empty(0), x.new_empty(0)
    grad_x = torch.empty_like(x)
    block_c, block_p, accumulate, grid = _config(x, C2)
    partial = torch.empty((grid[2] * grid[0], 10, C2), dtype=partial_dtype, device=x.device)
    _conv_backward_kernel[grid](
        x, dz, dw_weight, grad_x, partial, C2, H, W, *_strides(x),
        ACC=accumulate, BLOCK_C=block_c, BLOCK_P=block_p,
    )
    sums = partial.sum(dim=0)  # (10, C2)
    grad_weight = sums[:9].t().reshape(C2, 1, 3, 3).to(x.dtype).contiguous()
    return grad_x, grad_weight, sums[9].to(x.dtype).clone()
