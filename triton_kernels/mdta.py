"""mdta in Triton. Two kernels stream over the pixels, one program per (image x head, chunk of
pixels): `_gram_kernel` accumulates X Y^T (d x d) and the squared row norms of a chunk, and
`_apply_kernel` writes M X (+ diag(s) R) for a block of pixels. The per-chunk partials are summed
by torch in chunk order (deterministic), and the d x d algebra between the two passes (norms,
softmax and their gradients, as csrc/mdta_math.h) runs as torch ops. Accumulates in float32
(float64 for float64 inputs), with IEEE (not TF32) products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rescale import needs_rescale, power_of_two_scale

CHUNK = 1024
NORM_EPS = 1e-12  # F.normalize's eps


@triton.jit
def _gram_kernel(
    X, Y, GRAM, SQUARES, N, D, heads,
    x_sb, x_sc, x_sp, y_sb, y_sc, y_sp,
    WITH_SQUARES: tl.constexpr, ACC: tl.constexpr, CHUNK_SIZE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(0)
    chunk = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    rows = tl.arange(0, BLOCK_D)
    row_mask = rows < D
    channels = (h * D + rows).to(tl.int64)
    gram = tl.zeros((BLOCK_D, BLOCK_D), dtype=ACC)
    square_x = tl.zeros((BLOCK_D,), dtype=ACC)
    square_y = tl.zeros((BLOCK_D,), dtype=ACC)
    for start in tl.static_range(0, CHUNK_SIZE, BLOCK_N):
        pixels = chunk * CHUNK_SIZE + start + tl.arange(0, BLOCK_N)
        mask = row_mask[:, None] & (pixels < N)[None, :]
        p = pixels[None, :].to(tl.int64)
        x = tl.load(X + b * x_sb + channels[:, None] * x_sc + p * x_sp, mask=mask, other=0.0).to(ACC)
        y = tl.load(Y + b * y_sb + channels[:, None] * y_sc + p * y_sp, mask=mask, other=0.0).to(ACC)
        gram += tl.dot(x, tl.trans(y), input_precision="ieee")
        if WITH_SQUARES:
            square_x += tl.sum(x * x, axis=1)
            square_y += tl.sum(y * y, axis=1)
    slot = (bh * tl.num_programs(1) + chunk).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    tl.store(GRAM + slot * D * D + rows[:, None] * D + cols[None, :], gram,
             mask=row_mask[:, None] & (cols < D)[None, :])
    if WITH_SQUARES:
        tl.store(SQUARES + slot * 2 * D + rows, square_x, mask=row_mask)
        tl.store(SQUARES + slot * 2 * D + D + rows, square_y, mask=row_mask)


@triton.jit
def _apply_kernel(
    M, X, R, S, OUT, N, D, heads,
    x_sb, x_sc, x_sp, r_sb, r_sc, r_sp, o_sb, o_sc, o_sp,
    HAS_RESIDUAL: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """OUT[b, head rows, pixels] = M[bh] X[b, head rows, pixels] (+ S[bh] * R[...])."""
    bh = tl.program_id(0)
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    rows = tl.arange(0, BLOCK_D)
    row_mask = rows < D
    channels = (h * D + rows).to(tl.int64)
    pixels = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = row_mask[:, None] & (pixels < N)[None, :]
    p = pixels[None, :].to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    m = tl.load(M + bh.to(tl.int64) * D * D + rows[:, None] * D + cols[None, :],
                mask=row_mask[:, None] & (cols < D)[None, :], other=0.0).to(ACC)
    x = tl.load(X + b * x_sb + channels[:, None] * x_sc + p * x_sp, mask=mask, other=0.0).to(ACC)
    out = tl.dot(m, x, input_precision="ieee")
    if HAS_RESIDUAL:
        s = tl.load(S + bh.to(tl.int64) * D + rows, mask=row_mask, other=0.0).to(ACC)
        r = tl.load(R + b * r_sb + channels[:, None] * r_sc + p * r_sp, mask=mask, other=0.0).to(ACC)
        out += s[:, None] * r
    tl.store(OUT + b * o_sb + channels[:, None] * o_sc + p * o_sp, out.to(OUT.dtype.element_ty), mask=mask)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides; the H and W axes of t flatten into one pixel axis."""
    return t.stride(0), t.stride(1), t.stride(3)


def _accumulate(t: torch.Tensor):
    return (tl.float64, torch.float64) if t.dtype == torch.float64 else (tl.float32, torch.float32)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _gram(x: torch.Tensor, y: torch.Tensor, heads: int, with_squares: bool):
    """(sum over chunks of X Y^T (B * heads, d, d), squared norms (B * heads, 2, d) or None)."""
    B, C, H, W = x.shape
    N, d = H * W, C // heads
    acc, acc_dtype = _accumulate(x)
    chunks = triton.cdiv(N, CHUNK)
    gram = torch.empty((B * heads, chunks, d, d), dtype=acc_dtype, device=x.device)
    squares = torch.empty((B * heads, chunks, 2, d), dtype=acc_dtype, device=x.device) if with_squares else gram
    _gram_kernel[(B * heads, chunks)](
        x, y, gram, squares, N, d, heads, *_strides(x), *_strides(y),
        WITH_SQUARES=with_squares, ACC=acc, CHUNK_SIZE=CHUNK, BLOCK_D=_block_d(d), BLOCK_N=32,
    )
    return gram.sum(dim=1), squares.sum(dim=1) if with_squares else None


def _apply(m: torch.Tensor, x: torch.Tensor, heads: int, out: torch.Tensor,
           residual: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
    B, C, H, W = x.shape
    N, d = H * W, C // heads
    acc, _ = _accumulate(x)
    block_n = 32
    _apply_kernel[(B * heads, triton.cdiv(N, block_n))](
        m.contiguous(), x, x if residual is None else residual, m if scale is None else scale.contiguous(), out,
        N, d, heads, *_strides(x), *_strides(x if residual is None else residual), *_strides(out),
        HAS_RESIDUAL=residual is not None, ACC=acc, BLOCK_D=_block_d(d), BLOCK_N=block_n,
    )
    return out


def _empty_like_layout(q: torch.Tensor) -> torch.Tensor:
    memory_format = torch.channels_last if q.stride(1) == 1 and q.shape[1] > 1 else torch.contiguous_format
    return torch.empty(q.shape, dtype=q.dtype, device=q.device, memory_format=memory_format)


def _attention(cosine: torch.Tensor, temperature: torch.Tensor, heads: int) -> torch.Tensor:
    b, _, d, _ = cosine.shape
    return (cosine * temperature.to(cosine.dtype).reshape(1, heads, 1, 1)).softmax(-1).reshape(b * heads, d, d)


def _downscale(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the power of two of triton_kernels.rescale: (B, C, 1, 1)."""
    return power_of_two_scale(x.abs().amax((2, 3), keepdim=True), x.dtype)


def forward(q, k, v, temperature, heads, dw_weight=None, dw_bias=None, project_weight=None, project_bias=None):
    """See pyairir.reference.mdta; returns (out, cosine, q_norm, k_norm) as the C++ op does. If
    the Gram matrix or the squared norms overflow, they come from rows scaled by powers of two.
    With a depthwise filter, q, k and v are convolved whole first, and with a projection the output
    is projected after (torch's convolutions), as the CUDA binding does; the CPU kernel alone fuses
    them."""
    if dw_weight is not None:
        q, k, v = convolved(q, k, v, dw_weight, dw_bias)
    B, C = q.shape[:2]
    d = C // heads
    gram, squares = _gram(q, k, heads, with_squares=True)
    scale_q = scale_k = None
    if not (torch.isfinite(gram).all() and torch.isfinite(squares).all()):
        scale_q, scale_k = _downscale(q), _downscale(k)
        gram, squares = _gram(q * scale_q, k * scale_k, heads, with_squares=True)
    norms = squares.sqrt().clamp_min(NORM_EPS)  # (B * heads, 2, d)
    cosine = (gram / norms[:, 0, :, None] / norms[:, 1, None, :]).reshape(B, heads, d, d)
    attention = _attention(cosine, temperature, heads)
    out = _apply(attention, v, heads, _empty_like_layout(q))
    if project_weight is not None:
        projected = torch.nn.functional.conv2d(out, project_weight, project_bias)
        out = _empty_like_layout(q).copy_(projected)
    q_norm, k_norm = norms[:, 0].reshape(B, C).clone(), norms[:, 1].reshape(B, C).clone()
    if scale_q is not None:
        q_norm = q_norm / scale_q.reshape(B, C).to(q_norm.dtype)
        k_norm = k_norm / scale_k.reshape(B, C).to(k_norm.dtype)
    return out, cosine, q_norm, k_norm


def convolved(q, k, v, dw_weight, dw_bias):
    """q, k, v each convolved with its third of the depthwise filter (3C, 1, 3, 3), padding 1."""
    c = q.shape[1]
    biases = dw_bias.split(c) if dw_bias is not None else (None,) * 3
    return tuple(torch.nn.functional.conv2d(t, w, b, padding=1, groups=c)
                 for t, w, b in zip((q, k, v), dw_weight.split(c), biases))


def backward(grad_out, q, k, v, temperature, cosine, q_norm, k_norm, heads):
    """Gradients w.r.t. (q, k, v, temperature); the formulas of csrc/mdta_math.h. Huge rows:
    dq = s dq' from the rows scaled by powers of two."""
    if needs_rescale(q_norm, k_norm):
        B, C = q.shape[:2]
        scale_q, scale_k = _downscale(q), _downscale(k)
        grads = _backward(grad_out, q * scale_q, k * scale_k, v, temperature, cosine,
                          q_norm * scale_q.reshape(B, C).to(q_norm.dtype),
                          k_norm * scale_k.reshape(B, C).to(k_norm.dtype), heads)
        return grads[0] * scale_q, grads[1] * scale_k, grads[2], grads[3]
    return _backward(grad_out, q, k, v, temperature, cosine, q_norm, k_norm, heads)


def _backward(grad_out, q, k, v, temperature, cosine, q_norm, k_norm, heads):
    B, C = q.shape[:2]
    d = C // heads
    attention = _attention(cosine, temperature, heads)
    grad_v = _apply(attention.transpose(1, 2), grad_out, heads, _empty_like_layout(q))
    grad_attention, _ = _gram(grad_out, v, heads, with_squares=False)
    dA = grad_attention.reshape(B, heads, d, d)
    A = attention.reshape(B, heads, d, d)
    dS = A * (dA - (dA * A).sum(-1, keepdim=True))
    grad_temperature = (dS * cosine).sum((0, 2, 3)).reshape(temperature.shape).to(temperature.dtype)
    dC = dS * temperature.to(cosine.dtype).reshape(1, heads, 1, 1)
    qn, kn = q_norm.reshape(B, heads, d), k_norm.reshape(B, heads, d)
    dG = dC / qn[..., :, None] / kn[..., None, :]
    dCC = dC * cosine
    q_scale = (-dCC.sum(-1) / (qn * qn)).masked_fill(qn <= NORM_EPS, 0)
    k_scale = (-dCC.sum(-2) / (kn * kn)).masked_fill(kn <= NORM_EPS, 0)
    grad_q = _apply(dG.reshape(B * heads, d, d), k, heads, _empty_like_layout(q), q, q_scale.reshape(B * heads, d))
    grad_k = _apply(dG.transpose(-1, -2).reshape(B * heads, d, d), q, heads, _empty_like_layout(q), k,
                    k_scale.reshape(B * heads, d))
    return grad_q, grad_k, grad_v, grad_temperature
