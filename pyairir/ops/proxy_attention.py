"""torch.ops.pyairir.proxy_attention: SIPL's Proxy Fusion attention core, flash-style (online
softmax over key blocks, cosine norms folded into the scores): memory O(tokens), not O(tokens²).

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/proxy_attention.cpp; CUDA kernel
csrc/cuda/proxy_attention.cu (binding in csrc/cuda/bindings); Triton kernel
triton_kernels/proxy_attention.py (op pyairir::proxy_attention_triton); reference
pyairir/reference/proxy_attention.py.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_heads, check_image, check_like
from pyairir.ops import backend, layout, registration

OP = "pyairir::proxy_attention"


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_image(t, name, OP)
        if not layout.is_slice_of_dense(t):
            raise ValueError(f"{OP}: {name} must be NCHW or channels_last, or a channel slice of such a tensor, "
                             f"got strides {t.stride()} for shape {tuple(t.shape)}")
    if k.shape[:2] != q.shape[:2]:
        raise ValueError(f"{OP}: k must have the batch and channels of q ({q.shape[0]}, {q.shape[1]}), "
                         f"got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{OP}: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        check_like(t, name, OP, q, "q")
    check_heads(heads, temperature, q, OP)


def proxy_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                    heads: int) -> torch.Tensor:
    """Cosine cross-attention of the tokens of q (B, C, Hq, Wq) over those of k, v (B, C, Hk, Wk).

    Per head (d = C / heads channels): softmax((q̂ k̂^T) * temperature[h]) v with q̂, k̂ each
    token's d-vector L2-normalised (SIPL Eq. 3-4; pyairir.reference.proxy_attention). Any token
    counts. q, k, v: NCHW or channels_last, or channel slices of such a tensor (e.g.
    kv.chunk(2, dim=1)); the output is dense in q's layout. temperature: `heads` values (the
    official parameter is (heads, 1, 1)). Differentiable in q, k, v and temperature.
    """
    check_inputs(q, k, v, temperature, heads)
    implementation = backend.implementation(q)
    if implementation == "reference":
        return reference.proxy_attention(q, k, v, temperature, heads)
    return registration.run("proxy_attention", implementation, reference.proxy_attention, q, k, v, temperature,
                            heads)[0]


def _fake(q, k, v, temperature, heads):
    check_inputs(q, k, v, temperature, heads)
    b, _, hq, wq = q.shape
    accumulate = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device, memory_format=layout.pixel_major_format(q))
    rows = q.new_empty((b, heads, hq * wq), dtype=accumulate)
    return out, rows, torch.empty_like(rows), q.new_empty((b, heads, k.shape[2] * k.shape[3]), dtype=accumulate)


def _fake_backward(grad_out, q, k, v, temperature, out, logsumexp, q_norm, k_norm, heads):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=layout.pixel_major_format(t))
                 for t in (q, k, v)) + (torch.empty_like(temperature),)


def _setup_context(ctx, inputs, output):
    q, k, v, temperature, heads = inputs
    out, logsumexp, q_norm, k_norm = output
    ctx.mark_non_differentiable(logsumexp, q_norm, k_norm)
    ctx.save_for_backward(q, k, v, temperature, out, logsumexp, q_norm, k_norm)
    ctx.heads = heads


def _make_backward(backward_op):
    def backward(ctx, grad_out, *_):
        q, k, v, temperature, out, logsumexp, q_norm, k_norm = ctx.saved_tensors
        grad_out = grad_out.contiguous(memory_format=layout.pixel_major_format(out))
        grads = backward_op(grad_out, q, k, v, temperature, out, logsumexp, q_norm, k_norm, ctx.heads)
        return (*grads, None)

    return backward


registration.register("proxy_attention", fake=_fake, fake_backward=_fake_backward, setup_context=_setup_context,
                      make_backward=_make_backward)
