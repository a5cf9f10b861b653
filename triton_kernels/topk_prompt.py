"""topk_prompt in Triton. The gate (top-k of a softmax over n logits) and the small gradient
algebra after the resize's adjoint run in torch, as in csrc/topk_prompt_math.h; the kernels do the
per-pixel work:

- forward: one program per (sample, channel) plane and block of output pixels; each pixel reads
  its four bilinear taps from only the k selected components;
- backward: the resize's adjoint as a gather, one program per plane and block of prompt pixels:
  a prompt row i receives from the output rows y whose floor tap i0(y) is i - 1 or i, a contiguous
  range, summed in a fixed order (deterministic, no atomics).

Taps follow csrc/bilinear.h (F.interpolate's align_corners=False) and are computed by torch in the
accumulation type (float32; float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _taps(size_in: int, size_out: int, dtype: torch.dtype, device: torch.device):
    """(i0, i1, l0, l1) per output index, as csrc/bilinear.h."""
    d = torch.arange(size_out, device=device, dtype=dtype)
    src = ((d + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
    i0 = src.to(torch.int64)
    l1 = src - i0.to(dtype)
    i1 = torch.where((i0 < size_in - 1) & (l1 > 0), i0 + 1, i0)
    return i0, i1, 1 - l1, l1


def _gate(logits: torch.Tensor, k: int, renormalize: bool):
    weights, selection = logits.to(_acc(logits.dtype)).softmax(1).topk(k, 1)
    if renormalize:
        weights = weights / weights.sum(1, keepdim=True)
    return weights.contiguous(), selection.contiguous()


@triton.jit
def _forward_kernel(P, Wt, S, OUT, Y0, Y1, LY0, LY1, X0, X1, LX0, LX1, C, s, H, W, K: tl.constexpr,
                    BLOCK: tl.constexpr):
    plane = tl.program_id(1).to(tl.int64)
    b = plane // C
    c = plane % C
    pixels = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = pixels < H * W
    y = pixels // W
    x = pixels % W
    y0 = tl.load(Y0 + y, mask=mask, other=0)
    y1 = tl.load(Y1 + y, mask=mask, other=0)
    ly0 = tl.load(LY0 + y, mask=mask, other=0.0)
    ly1 = tl.load(LY1 + y, mask=mask, other=0.0)
    x0 = tl.load(X0 + x, mask=mask, other=0)
    x1 = tl.load(X1 + x, mask=mask, other=0)
    lx0 = tl.load(LX0 + x, mask=mask, other=0.0)
    lx1 = tl.load(LX1 + x, mask=mask, other=0.0)
    acc = tl.zeros([BLOCK], dtype=ly0.dtype)
    for j in range(K):  # only the selected components
        index = tl.load(S + b * K + j)
        w = tl.load(Wt + b * K + j)
        base = P + (index * C + c) * s * s
        r0 = ly0 * (lx0 * tl.load(base + y0 * s + x0, mask=mask, other=0.0).to(ly0.dtype)
                    + lx1 * tl.load(base + y0 * s + x1, mask=mask, other=0.0).to(ly0.dtype))
        r1 = ly1 * (lx0 * tl.load(base + y1 * s + x0, mask=mask, other=0.0).to(ly0.dtype)
                    + lx1 * tl.load(base + y1 * s + x1, mask=mask, other=0.0).to(ly0.dtype))
        acc += w * (r0 + r1)
    tl.store(OUT + plane * H * W + pixels, acc.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _weight(T0, T1, L0, L1, d, i, mask):
    """The weight of prompt index i in output index d's bilinear taps (0 where masked)."""
    t0 = tl.load(T0 + d, mask=mask, other=-1)
    t1 = tl.load(T1 + d, mask=mask, other=-1)
    l0 = tl.load(L0 + d, mask=mask, other=0.0)
    l1 = tl.load(L1 + d, mask=mask, other=0.0)
    return tl.where(t0 == i, l0, 0.0) + tl.where(t1 == i, l1, 0.0)


@triton.jit
def _adjoint_kernel(G, DM, Y0, Y1, LY0, LY1, X0, X1, LX0, LX1, YSTART, YCOUNT, XSTART, XCOUNT, s, H, W,
                    MAX_Y, MAX_X, BLOCK: tl.constexpr):
    plane = tl.program_id(1).to(tl.int64)
    cells = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cells < s * s
    i = cells // s
    j = cells % s
    y_start = tl.load(YSTART + i, mask=mask, other=0)
    y_count = tl.load(YCOUNT + i, mask=mask, other=0)
    x_start = tl.load(XSTART + j, mask=mask, other=0)
    x_count = tl.load(XCOUNT + j, mask=mask, other=0)
    acc = tl.zeros([BLOCK], dtype=LY0.dtype.element_ty)
    for dy in range(MAX_Y):
        y = y_start + dy
        ymask = mask & (dy < y_count)
        wy = _weight(Y0, Y1, LY0, LY1, y, i, ymask)
        for dx in range(MAX_X):
            x = x_start + dx
            xmask = ymask & (dx < x_count)
            wx = _weight(X0, X1, LX0, LX1, x, j, xmask)
            g = tl.load(G + plane * H * W + y * W + x, mask=xmask, other=0.0).to(acc.dtype)
            acc += wy * wx * g
    tl.store(DM + plane * s * s + cells, acc, mask=mask)


def _ranges(i0: torch.Tensor, size_in: int):
    """For each prompt index i, the contiguous range of output indices d with i0(d) in {i - 1, i}."""
    i = torch.arange(size_in, device=i0.device)
    start = torch.searchsorted(i0, (i - 1).clamp_min(0))
    end = torch.searchsorted(i0, i, right=True)
    count = end - start
    return start.contiguous(), count.contiguous(), int(count.max())


def forward(logits: torch.Tensor, prompts: torch.Tensor, height: int, width: int, k: int, renormalize: bool):
    B, (n, C, s, _) = logits.shape[0], prompts.shape
    weights, selection = _gate(logits, k, renormalize)
    acc = _acc(prompts.dtype)
    rows, cols = _taps(s, height, acc, prompts.device), _taps(s, width, acc, prompts.device)
    out = torch.empty((B, C, height, width), dtype=prompts.dtype, device=prompts.device)
    block = 128
    grid = (triton.cdiv(height * width, block), B * C)
    _forward_kernel[grid](prompts, weights, selection, out, *rows, *cols, C, s, height, width, K=k, BLOCK=block)
    return out, weights.to(prompts.dtype), selection


def backward(grad_out: torch.Tensor, logits: torch.Tensor, prompts: torch.Tensor, k: int, renormalize: bool):
    B, (n, C, s, _), (H, W) = logits.shape[0], prompts.shape, grad_out.shape[2:]
    acc = _acc(prompts.dtype)
    rows, cols = _taps(s, H, acc, prompts.device), _taps(s, W, acc, prompts.device)
    y_start, y_count, max_y = _ranges(rows[0], s)
    x_start, x_count, max_x = _ranges(cols[0], s)
    d_mixed = torch.empty((B, C, s, s), dtype=acc, device=prompts.device)
    block = 64
    grid = (triton.cdiv(s * s, block), B * C)
    _adjoint_kernel[grid](grad_out.contiguous(), d_mixed, *rows, *cols, y_start, y_count, x_start, x_count, s, H,
                          W, max_y, max_x, BLOCK=block)
    return _gradients(d_mixed, logits, prompts, k, renormalize)


def _gradients(d_mixed, logits, prompts, k, renormalize):
    """The algebra of csrc/topk_prompt_math.h's gradients(), in the same order."""
    w, selection = _gate(logits, k, renormalize)
    acc = d_mixed.dtype
    selected = prompts.to(acc)[selection]  # (B, k, C, s, s)
    dw = (selected * d_mixed[:, None]).sum((2, 3, 4))
    contributions = w[:, :, None, None, None] * d_mixed[:, None]
    grad_prompts = torch.zeros(prompts.shape, dtype=acc, device=prompts.device)
    for b, row in enumerate(selection.tolist()):  # in batch order, not index_add_ (unordered on CUDA)
        for j, index in enumerate(row):
            grad_prompts[index] += contributions[b, j]
    p = logits.to(acc).softmax(1)
    dp_selected = dw
    if renormalize:
        dp_selected = (dw - (dw * w).sum(1, keepdim=True)) / p.gather(1, selection).sum(1, keepdim=True)
    dp = torch.zeros_like(p).scatter(1, selection, dp_selected)
    grad_logits = p * (dp - (p * dp).sum(1, keepdim=True))
    return grad_logits.to(logits.dtype), grad_prompts.to(prompts.dtype)
