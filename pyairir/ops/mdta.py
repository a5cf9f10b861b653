"""torch.ops.pyairir.mdta: Restormer's transposed attention core, with the L2 norms folded
into the Gram matrix.

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/mdta.cpp; CUDA kernel
csrc/cuda/mdta.cu (binding in csrc/cuda/bindings); Triton kernel
triton_kernels/mdta.py (op pyairir::mdta_triton); reference
pyairir/reference/mdta.py.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_depthwise_filter, check_heads, check_image, check_weight_and_bias
from pyairir.ops import backend, layout, registration
from pyairir.reference.mdta import convolved

OP = "pyairir::mdta"


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int,
                 dw_weight: torch.Tensor | None = None, dw_bias: torch.Tensor | None = None,
                 project_weight: torch.Tensor | None = None, project_bias: torch.Tensor | None = None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_image(t, name, OP)
        if t.shape != q.shape or t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{OP}: {name} must have the shape, dtype and device of q ({tuple(q.shape)}, "
                             f"{q.dtype}, {q.device}), got {tuple(t.shape)}, {t.dtype}, {t.device}")
        if not layout.is_slice_of_dense(t):
            raise ValueError(f"{OP}: {name} must be NCHW or channels_last, or a channel slice of such a tensor, "
                             f"got strides {t.stride()} for shape {tuple(t.shape)}")
    check_heads(heads, temperature, q, OP)
    check_depthwise_filter(dw_weight, dw_bias, 3 * q.shape[1], OP, q, "q", "per channel of q, k and v, in that order")
    check_projection(project_weight, project_bias, q)


def check_projection(weight: object, bias: object, q: torch.Tensor) -> None:
    """An optional 1x1 convolution (C, C, 1, 1) of the output, with an optional bias (C,), like q."""
    c = q.shape[1]
    what = "a 1x1 convolution of q's channels"
    check_weight_and_bias(weight, bias, ("project_weight", "project_bias"), ((c, c, 1, 1), (c,)), (what, what), OP,
                          q, "q")


def mdta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int,
         dw_weight: torch.Tensor | None = None, dw_bias: torch.Tensor | None = None,
         project_weight: torch.Tensor | None = None, project_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Transposed attention of q, k, v (B, C, H, W) with `heads` heads -> (B, C, H, W).

    Per head (d = C / heads channels, N = H * W pixels): softmax((q̂ k̂^T) * temperature[h]) v,
    q̂ and k̂ L2-normalised over the pixels (Restormer Eq. 2). q, k, v: NCHW or channels_last, or
    channel slices of such a tensor (e.g. qkv.chunk(3, dim=1)); the output is dense in q's layout.
    temperature: `heads` values (the official parameter is (heads, 1, 1)). With dw_weight
    (3C, 1, 3, 3) and dw_bias (3C,), q, k and v are first convolved with their thirds of that 3x3
    depthwise filter, padding 1 (MDTA's qkv_dwconv, which the CPU kernel fuses: the convolved
    q, k, v are never written whole). With project_weight (C, C, 1, 1) and project_bias (C,)
    (MDTA's project_out), returns that 1x1 convolution of the attention's output, folded in: the
    CPU kernel applies P blockdiag(A_h) to v, one C x C product per pixel instead of the heads'
    d x d ones and then the projection's. Differentiable in every tensor.
    """
    check_inputs(q, k, v, temperature, heads, dw_weight, dw_bias, project_weight, project_bias)
    implementation = backend.implementation(q)
    args = (dw_weight, dw_bias, project_weight, project_bias)
    if implementation == "reference":
        return reference.mdta(q, k, v, temperature, heads, *args)
    args = tuple(None if t is None else t.contiguous() for t in args)
    return registration.run("mdta", implementation, reference.mdta, q, k, v, temperature, heads, *args)[0]


def _fake(q, k, v, temperature, heads, dw_weight=None, dw_bias=None, project_weight=None, project_bias=None):
    check_inputs(q, k, v, temperature, heads, dw_weight, dw_bias, project_weight, project_bias)
    b, c = q.shape[:2]
    d = c // heads
    accumulate = torch.float64 if q.dtype == torch.float64 else torch.float32
    memory_format = layout.pixel_major_format(q)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device, memory_format=memory_format)
    return (out, q.new_empty((b, heads, d, d), dtype=accumulate), q.new_empty((b, c), dtype=accumulate),
            q.new_empty((b, c), dtype=accumulate))


def _fake_backward(grad_out, q, k, v, temperature, cosine, q_norm, k_norm, heads):
    memory_format = layout.pixel_major_format(q)
    grads = [torch.empty(q.shape, dtype=q.dtype, device=q.device, memory_format=memory_format) for _ in range(3)]
    return (*grads, torch.empty_like(temperature))


def _setup_context(ctx, inputs, output):
    q, k, v, temperature, heads, dw_weight, dw_bias, project_weight, project_bias = inputs
    out, cosine, q_norm, k_norm = output
    ctx.mark_non_differentiable(cosine, q_norm, k_norm)
    ctx.save_for_backward(q, k, v, temperature, cosine, q_norm, k_norm, dw_weight, dw_bias, project_weight,
                          project_bias)
    ctx.heads = heads


def _make_backward(backward_op):
    def backward(ctx, grad_out, *_):
        q, k, v, temperature, cosine, q_norm, k_norm, dw_weight, dw_bias, project_weight, project_bias = \
            ctx.saved_tensors
        inputs = (q, k, v)
        if dw_weight is not None:  # the backward op wants the convolved operands: convolve them again
            q, k, v = convolved(q, k, v, dw_weight, dw_bias)
        grad_project = (None, None)
        if project_weight is not None:  # through the projection, to the attention's own output
            grad_project = _projection_gradients(grad_out, cosine, temperature, v, ctx.heads, project_weight,
                                                 project_bias is not None)
            grad_out = torch.nn.functional.conv2d(grad_out, project_weight.transpose(0, 1))
        memory_format = layout.pixel_major_format(q)
        grad_out = grad_out.contiguous(memory_format=memory_format)
        grads = backward_op(grad_out, q, k, v, temperature, cosine, q_norm, k_norm, ctx.heads)
        if dw_weight is None:
            return *grads, None, None, None, *grad_project
        grad_q, grad_k, grad_v, grad_weight, grad_bias = _through_filter(grads[:3], inputs, dw_weight,
                                                                         dw_bias is not None)
        return grad_q, grad_k, grad_v, grads[3], None, grad_weight, grad_bias, *grad_project

    return backward


def _projection_gradients(grad_out, cosine, temperature, v, heads, weight, with_bias):
    """(grad project_weight, grad project_bias or None): the attention's output A V, recomputed from the
    saved cosine (B, heads, d, d), against the output's gradient."""
    b, c, h, w = v.shape
    d = c // heads
    attention = (cosine * temperature.to(cosine.dtype).reshape(1, heads, 1, 1)).softmax(-1)
    inner = (attention.to(v.dtype) @ v.reshape(b, heads, d, h * w)).reshape(b, c, h, w)
    grad_weight = torch.einsum("bchw,bdhw->cd", grad_out, inner).reshape(weight.shape)
    return grad_weight, grad_out.sum((0, 2, 3)) if with_bias else None


def _through_filter(grads, inputs, dw_weight, with_bias):
    """(grad q, k, v before the depthwise filter, grad dw_weight (3C, 1, 3, 3), grad dw_bias (3C,) or None)
    from the gradients w.r.t. q, k, v after it."""
    c = inputs[0].shape[1]
    parts = [torch.ops.aten.convolution_backward(grad, x, w, [c] if with_bias else None, [1, 1], [1, 1], [1, 1],
                                                 False, [0, 0], c, [True, True, with_bias])
             for grad, x, w in zip(grads, inputs, dw_weight.split(c))]
    grad_bias = torch.cat([p[2] for p in parts]) if with_bias else None
    return parts[0][0], parts[1][0], parts[2][0], torch.cat([p[1] for p in parts]), grad_bias


registration.register("mdta", fake=_fake, fake_backward=_fake_backward, setup_context=_setup_context,
                      make_backward=_make_backward)
