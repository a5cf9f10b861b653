"""torch.ops.pyairir.gated_gelu: GDFN's gated GELU (or NAFNet's SimpleGate), fused with the
depthwise 3x3 convolution before it.

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/gated_gelu.cpp; CUDA
kernel csrc/cuda/gated_gelu.cu (binding in csrc/cuda/bindings); Triton kernel
triton_kernels/gated_gelu.py (op pyairir::gated_gelu_triton); reference
pyairir/reference/gated_gelu.py.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_depthwise_filter, check_image
from pyairir.ops import backend, registration
from pyairir.ops.layout import check_dense, dense_like, densified

OP = "pyairir::gated_gelu"


def check_inputs(x: torch.Tensor, dw_weight: torch.Tensor | None, dw_bias: torch.Tensor | None) -> None:
    check_image(x, "x", OP)
    check_dense(x, "x", OP)
    channels = x.shape[1]
    if channels % 2:
        raise ValueError(f"{OP}: x must have an even number of channels (two halves to gate), got {channels}")
    check_depthwise_filter(dw_weight, dw_bias, channels, OP, x, "x", "per channel of x")


def gated_gelu(
    x: torch.Tensor, dw_weight: torch.Tensor | None = None, dw_bias: torch.Tensor | None = None, gelu: bool = True
) -> torch.Tensor:
    """x (B, 2h, H, W), dense NCHW or channels_last (other strides are copied to NCHW) -> (B, h, H, W)
    in x's layout.

    z = x, or its 3x3 depthwise convolution (padding 1) with dw_weight (2h, 1, 3, 3) and dw_bias (2h,);
    returns GELU(z1) * z2 (exact erf GELU), or z1 * z2 with gelu=False, for z1, z2 the channel halves of z.
    Differentiable in x, dw_weight and dw_bias.
    """
    x = densified(x)
    check_inputs(x, dw_weight, dw_bias)
    if dw_weight is not None:
        dw_weight = dw_weight.contiguous()
    return registration.run("gated_gelu", backend.implementation(x), reference.gated_gelu, x, dw_weight, dw_bias, gelu)


def _fake(x, dw_weight, dw_bias, gelu):
    check_inputs(x, dw_weight, dw_bias)
    b, c, h, w = x.shape
    return x.new_empty((b, c // 2, h, w)).contiguous(memory_format=_format(x))


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if not x.is_contiguous() else torch.contiguous_format


def _fake_backward(grad_out, x, dw_weight, dw_bias, gelu):
    if dw_weight is None:
        return torch.empty_like(x), x.new_empty(0), x.new_empty(0)
    return torch.empty_like(x), torch.empty_like(dw_weight), x.new_empty(x.shape[1])


def _setup_context(ctx, inputs, output):
    x, dw_weight, dw_bias, gelu = inputs
    ctx.save_for_backward(x, dw_weight, dw_bias)
    ctx.gelu = gelu


def _make_backward(backward_op):
    def backward(ctx, grad):
        x, dw_weight, dw_bias = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = backward_op(dense_like(grad, x), x, dw_weight, dw_bias, ctx.gelu)
        if dw_weight is None:
            return grad_x, None, None, None
        return grad_x, grad_weight, grad_bias if dw_bias is not None else None, None

    return backward


registration.register("gated_gelu", fake=_fake, fake_backward=_fake_backward, setup_context=_setup_context,
                      make_backward=_make_backward)
