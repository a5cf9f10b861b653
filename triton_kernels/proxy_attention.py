"""proxy_attention in Triton: flash attention with cosine scores, mirroring
csrc/cpu/proxy_attention.cpp.

- norms: one program per (image, head, block of tokens) writes max(|x_t|, eps) per token;
- forward: one program per (image, head, block of BLOCK_M queries) streams over blocks of
  BLOCK_N keys with an online softmax, the norms folded into the scores as a row and a column
  scale; writes the output and the log-sum-exp;
- backward, two passes without atomics: per query block, D = dO . out, dq and the block's
  temperature-gradient partial (summed by torch in block order); per key block, dk and dv.

Operands are addressed through their strides, so NCHW, channels_last and channel slices of
either are read in place. Loads are upcast to float32 (float64 for float64 inputs) before any
arithmetic; products are IEEE in that type (never TF32) and accumulate in it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rescale import needs_rescale, power_of_two_scale

NORM_EPS = 1e-12  # F.normalize's eps


@triton.jit
def _dot(a, b):
    """a @ b in the operands' type: IEEE float32 products, not the TF32 tl.dot uses by default on a GPU."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _offsets(b, h, t0, N, d, stride_b, stride_c, stride_t, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Offsets and mask of the (BLOCK_T, BLOCK_D) tile of tokens t0.. of head h of image b."""
    tokens = t0 + tl.arange(0, BLOCK_T)
    channels = tl.arange(0, BLOCK_D)
    mask = (tokens < N)[:, None] & (channels < d)[None, :]
    offsets = (b * stride_b + (h * d + channels[None, :]).to(tl.int64) * stride_c
               + tokens[:, None].to(tl.int64) * stride_t)
    return offsets, mask


@triton.jit
def _tile(X, b, h, t0, N, d, stride_b, stride_c, stride_t, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
          ACC: tl.constexpr):
    """That tile of X in the accumulation type, zeros outside the tensor."""
    offsets, mask = _offsets(b, h, t0, N, d, stride_b, stride_c, stride_t, BLOCK_T, BLOCK_D)
    return tl.load(X + offsets, mask=mask, other=0.0).to(ACC)


@triton.jit
def _norms_kernel(X, NORMS, N, d, heads, stride_b, stride_c, stride_t, EPS: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // heads, bh % heads
    t0 = tl.program_id(0) * BLOCK_T
    x = _tile(X, b, h, t0, N, d, stride_b, stride_c, stride_t, BLOCK_T, BLOCK_D, ACC)
    tokens = t0 + tl.arange(0, BLOCK_T)
    tl.store(NORMS + bh * N + tokens, tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), EPS), mask=tokens < N)


@triton.jit
def _forward_kernel(Q, K, V, T, QN, KN, OUT, LSE, Nq, Nk, d, heads, sqb, sqc, sqt, skb, skc, skt, svb, svc, svt,
                    sob, soc, sot, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // heads, bh % heads
    q0 = tl.program_id(0) * BLOCK_M
    rows = q0 + tl.arange(0, BLOCK_M)
    q = _tile(Q, b, h, q0, Nq, d, sqb, sqc, sqt, BLOCK_M, BLOCK_D, ACC)
    scale = tl.load(T + h).to(ACC) / tl.load(QN + bh * Nq + rows, mask=rows < Nq, other=1.0)
    row_max = tl.full([BLOCK_M], float("-inf"), ACC)
    row_sum = tl.zeros([BLOCK_M], ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for k0 in range(0, Nk, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        k = _tile(K, b, h, k0, Nk, d, skb, skc, skt, BLOCK_N, BLOCK_D, ACC)
        v = _tile(V, b, h, k0, Nk, d, svb, svc, svt, BLOCK_N, BLOCK_D, ACC)
        inverse = 1.0 / tl.load(KN + bh * Nk + cols, mask=cols < Nk, other=1.0)
        s = _dot(q, tl.trans(k)) * scale[:, None] * inverse[None, :]
        s = tl.where((cols < Nk)[None, :], s, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(s, axis=1))
        p = tl.exp(s - new_max[:, None])
        rescale = tl.exp(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + _dot(p, v)
        row_max = new_max
    acc = acc / row_sum[:, None]
    offsets, mask = _offsets(b, h, q0, Nq, d, sob, soc, sot, BLOCK_M, BLOCK_D)
    tl.store(OUT + offsets, acc.to(OUT.dtype.element_ty), mask=mask)
    tl.store(LSE + bh * Nq + rows, row_max + tl.log(row_sum), mask=rows < Nq)


@triton.jit
def _normalize_backward(grad, x, norms, EPS: tl.constexpr):
    """(dx_hat - x_hat (x_hat . dx_hat)) / |x| per row; dx_hat / eps where the norm is clamped."""
    x_hat = x / norms[:, None]
    dot = tl.where(norms > EPS, tl.sum(x_hat * grad, axis=1), 0.0)
    return (grad - x_hat * dot[:, None]) / norms[:, None]


@triton.jit
def _backward_query_kernel(Q, K, V, T, QN, KN, OUT, DO, LSE, DELTA, DQ, PARTIAL_T, Nq, Nk, d, heads,
                           sqb, sqc, sqt, skb, skc, skt, svb, svc, svt, sob, soc, sot, sgb, sgc, sgt, sdb, sdc, sdt,
                           EPS: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_D: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // heads, bh % heads
    q0 = tl.program_id(0) * BLOCK_M
    rows = q0 + tl.arange(0, BLOCK_M)
    t = tl.load(T + h).to(ACC)
    q = _tile(Q, b, h, q0, Nq, d, sqb, sqc, sqt, BLOCK_M, BLOCK_D, ACC)
    dout = _tile(DO, b, h, q0, Nq, d, sgb, sgc, sgt, BLOCK_M, BLOCK_D, ACC)
    out = _tile(OUT, b, h, q0, Nq, d, sob, soc, sot, BLOCK_M, BLOCK_D, ACC)
    delta = tl.sum(dout * out, axis=1)
    tl.store(DELTA + bh * Nq + rows, delta, mask=rows < Nq)
    norms = tl.load(QN + bh * Nq + rows, mask=rows < Nq, other=1.0)
    lse = tl.load(LSE + bh * Nq + rows, mask=rows < Nq, other=0.0)
    gathered = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    grad_t = tl.zeros([BLOCK_M], ACC)
    for k0 in range(0, Nk, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        k = _tile(K, b, h, k0, Nk, d, skb, skc, skt, BLOCK_N, BLOCK_D, ACC)
        v = _tile(V, b, h, k0, Nk, d, svb, svc, svt, BLOCK_N, BLOCK_D, ACC)
        inverse = 1.0 / tl.load(KN + bh * Nk + cols, mask=cols < Nk, other=1.0)
        cosine = _dot(q, tl.trans(k)) / norms[:, None] * inverse[None, :]
        p = tl.where((cols < Nk)[None, :], tl.exp(t * cosine - lse[:, None]), 0.0)
        ds = p * (_dot(dout, tl.trans(v)) - delta[:, None])
        grad_t += tl.sum(ds * cosine, axis=1)
        gathered += _dot(ds * inverse[None, :], k)
    dq = _normalize_backward(gathered * t, q, norms, EPS)
    offsets, mask = _offsets(b, h, q0, Nq, d, sdb, sdc, sdt, BLOCK_M, BLOCK_D)
    tl.store(DQ + offsets, dq.to(DQ.dtype.element_ty), mask=mask)
    tl.store(PARTIAL_T + bh * tl.num_programs(0) + tl.program_id(0), tl.sum(grad_t, axis=0))


@triton.jit
def _backward_key_kernel(Q, K, V, T, QN, KN, DO, LSE, DELTA, DK, DV, Nq, Nk, d, heads, sqb, sqc, sqt, skb, skc,
                         skt, svb, svc, svt, sgb, sgc, sgt, sdkb, sdkc, sdkt, sdvb, sdvc, sdvt, EPS: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // heads, bh % heads
    k0 = tl.program_id(0) * BLOCK_N
    cols = k0 + tl.arange(0, BLOCK_N)
    t = tl.load(T + h).to(ACC)
    k = _tile(K, b, h, k0, Nk, d, skb, skc, skt, BLOCK_N, BLOCK_D, ACC)
    v = _tile(V, b, h, k0, Nk, d, svb, svc, svt, BLOCK_N, BLOCK_D, ACC)
    key_norms = tl.load(KN + bh * Nk + cols, mask=cols < Nk, other=1.0)
    grad_keys = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    grad_values = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    for q0 in range(0, Nq, BLOCK_M):
        rows = q0 + tl.arange(0, BLOCK_M)
        q = _tile(Q, b, h, q0, Nq, d, sqb, sqc, sqt, BLOCK_M, BLOCK_D, ACC)
        dout = _tile(DO, b, h, q0, Nq, d, sgb, sgc, sgt, BLOCK_M, BLOCK_D, ACC)
        inverse = 1.0 / tl.load(QN + bh * Nq + rows, mask=rows < Nq, other=1.0)
        lse = tl.load(LSE + bh * Nq + rows, mask=rows < Nq, other=0.0)
        delta = tl.load(DELTA + bh * Nq + rows, mask=rows < Nq, other=0.0)
        cosine = _dot(k, tl.trans(q)) / key_norms[:, None] * inverse[None, :]  # (BLOCK_N, BLOCK_M)
        p = tl.where((rows < Nq)[None, :], tl.exp(t * cosine - lse[None, :]), 0.0)
        grad_values += _dot(p, dout)
        ds = p * (_dot(v, tl.trans(dout)) - delta[None, :])
        grad_keys += _dot(ds * (t * inverse)[None, :], q)
    dk = _normalize_backward(grad_keys, k, key_norms, EPS)
    offsets, mask = _offsets(b, h, k0, Nk, d, sdkb, sdkc, sdkt, BLOCK_N, BLOCK_D)
    tl.store(DK + offsets, dk.to(DK.dtype.element_ty), mask=mask)
    offsets, mask = _offsets(b, h, k0, Nk, d, sdvb, sdvc, sdvt, BLOCK_N, BLOCK_D)
    tl.store(DV + offsets, grad_values.to(DV.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(image, channel, token) strides of a head operand (pixels flatten with the W stride)."""
    return x.stride(0), x.stride(1), x.stride(3)


def _empty_like_layout(x: torch.Tensor) -> torch.Tensor:
    pixel_major = x.stride(1) == 1 and x.shape[1] > 1
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if pixel_major else torch.contiguous_format)


def _blocks(d: int) -> tuple[int, int, int]:
    block_d = max(16, triton.next_power_of_2(d))
    block = 32 if block_d <= 128 else 16
    return block, block, block_d


def _norms(x: torch.Tensor, heads: int, acc) -> torch.Tensor:
    B, C, H, W = x.shape
    d, n = C // heads, H * W
    norms = torch.empty((B, heads, n), dtype=acc[0], device=x.device)
    block_t, _, block_d = _blocks(d)
    _norms_kernel[(triton.cdiv(n, block_t), B * heads)](x, norms, n, d, heads, *_strides(x), EPS=NORM_EPS,
                                                        ACC=acc[1], BLOCK_T=block_t, BLOCK_D=block_d)
    return norms


def _downscale(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Per image, head and token, the power of two of triton_kernels.rescale, as x's shape."""
    B, C, H, W = x.shape
    largest = x.abs().reshape(B, heads, C // heads, H * W).amax(2, keepdim=True)
    return power_of_two_scale(largest, x.dtype).expand(B, heads, C // heads, H * W).reshape(B, C, H, W)


def _token_factors(scale: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """The factors of _downscale as the (B, heads, N) norms are laid out."""
    B, C = scale.shape[:2]
    return scale.reshape(B, heads, C // heads, -1)[:, :, 0].to(dtype)


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int):
    """See pyairir.reference.proxy_attention; returns (out, logsumexp, q_norm, k_norm). Tokens
    too large for their scores or squared norms run scaled by powers of two (rescale.py)."""
    acc = _acc(q.dtype)
    q_norm, k_norm = _norms(q, heads, acc), _norms(k, heads, acc)
    if not needs_rescale(q_norm, k_norm):
        return _forward(q, k, v, temperature, heads, q_norm, k_norm)
    scale_q, scale_k = _downscale(q, heads), _downscale(k, heads)
    q, k = q * scale_q, k * scale_k
    out, logsumexp, q_norm, k_norm = _forward(q, k, v, temperature, heads, _norms(q, heads, acc),
                                              _norms(k, heads, acc))
    return (out, logsumexp, q_norm / _token_factors(scale_q, heads, acc[0]),
            k_norm / _token_factors(scale_k, heads, acc[0]))


def _forward(q, k, v, temperature, heads, q_norm, k_norm):
    B, C, Hq, Wq = q.shape
    d, Nq, Nk = C // heads, Hq * Wq, k.shape[2] * k.shape[3]
    acc = _acc(q.dtype)
    out = _empty_like_layout(q)
    logsumexp = torch.empty((B, heads, Nq), dtype=acc[0], device=q.device)
    block_m, block_n, block_d = _blocks(d)
    _forward_kernel[(triton.cdiv(Nq, block_m), B * heads)](
        q, k, v, temperature.reshape(heads).contiguous(), q_norm, k_norm, out, logsumexp, Nq, Nk, d, heads,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out), ACC=acc[1], BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=block_d)
    return out, logsumexp, q_norm, k_norm


def backward(grad_out, q, k, v, temperature, out, logsumexp, q_norm, k_norm, heads):
    """Gradients w.r.t. (q, k, v, temperature); huge tokens: dx = s dx' from the scaled tokens."""
    if not needs_rescale(q_norm, k_norm):
        return _backward(grad_out, q, k, v, temperature, out, logsumexp, q_norm, k_norm, heads)
    scale_q, scale_k = _downscale(q, heads), _downscale(k, heads)
    grads = _backward(grad_out, q * scale_q, k * scale_k, v, temperature, out, logsumexp,
                      q_norm * _token_factors(scale_q, heads, q_norm.dtype),
                      k_norm * _token_factors(scale_k, heads, k_norm.dtype), heads)
    return grads[0] * scale_q, grads[1] * scale_k, grads[2], grads[3]


def _backward(grad_out, q, k, v, temperature, out, logsumexp, q_norm, k_norm, heads):
    B, C, Hq, Wq = q.shape
    d, Nq, Nk = C // heads, Hq * Wq, k.shape[2] * k.shape[3]
    acc = _acc(q.dtype)
    t = temperature.reshape(heads).contiguous()
    block_m, block_n, block_d = _blocks(d)
    grad_q, grad_k, grad_v = _empty_like_layout(q), _empty_like_layout(k), _empty_like_layout(v)
    delta = torch.empty((B, heads, Nq), dtype=acc[0], device=q.device)
    query_blocks = triton.cdiv(Nq, block_m)
    partial_t = torch.empty((B, heads, query_blocks), dtype=acc[0], device=q.device)
    _backward_query_kernel[(query_blocks, B * heads)](
        q, k, v, t, q_norm, k_norm, out, grad_out, logsumexp, delta, grad_q, partial_t, Nq, Nk, d, heads,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out), *_strides(grad_out), *_strides(grad_q),
        EPS=NORM_EPS, ACC=acc[1], BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    _backward_key_kernel[(triton.cdiv(Nk, block_n), B * heads)](
        q, k, v, t, q_norm, k_norm, grad_out, logsumexp, delta, grad_k, grad_v, Nq, Nk, d, heads, *_strides(q),
        *_strides(k), *_strides(v), *_strides(grad_out), *_strides(grad_k), *_strides(grad_v), EPS=NORM_EPS,
        ACC=acc[1], BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    grad_t = partial_t.sum(2).sum(0)  # over the query blocks, then the images, in order
    return grad_q, grad_k, grad_v, grad_t.to(temperature.dtype).reshape(temperature.shape)
