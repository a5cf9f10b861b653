"""torch.ops.pyairir.layer_norm_channels: Restormer's channel LayerNorm.

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/layer_norm_channels.cpp;
CUDA kernel csrc/cuda/layer_norm_channels.cu (binding in csrc/cuda/bindings);
Triton kernel triton_kernels/layer_norm_channels.py (op
pyairir::layer_norm_channels_triton); reference
pyairir/reference/layer_norm_channels.py. This file adds the fake kernels, the
autograd formula and the Python entry that picks an implementation.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_channel_vector, check_image
from pyairir.ops import backend, registration
from pyairir.ops.layout import check_dense, dense_like, densified

OP = "pyairir::layer_norm_channels"


def check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> None:
    check_image(x, "x", OP)
    check_dense(x, "x", OP)
    check_channel_vector(weight, "weight", OP, x)
    if bias is not None:
        check_channel_vector(bias, "bias", OP, x)
    if not eps > 0:
        raise ValueError(f"{OP}: eps must be positive, got {eps}")


def layer_norm_channels(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """Channel LayerNorm of x (B, C, H, W), dense NCHW or channels_last (other strides are copied
    to NCHW); returns (B, C, H, W) in x's layout.

    subtract_mean=True is Restormer's WithBias_LayerNorm, False its BiasFree_LayerNorm
    (see pyairir.reference.layer_norm_channels for the formula). Differentiable in x, weight, bias.
    """
    x = densified(x)
    check_inputs(x, weight, bias, eps)
    return registration.run("layer_norm_channels", backend.implementation(x), reference.layer_norm_channels,
                            x, weight, bias, eps, subtract_mean)


def _fake(x, weight, bias, eps, subtract_mean):
    check_inputs(x, weight, bias, eps)
    return torch.empty_like(x)


def _fake_backward(grad_out, x, weight, eps, subtract_mean):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, subtract_mean = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps, ctx.subtract_mean, ctx.has_bias = eps, subtract_mean, bias is not None


def _make_backward(backward_op):
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = backward_op(dense_like(grad, x), x, weight, ctx.eps, ctx.subtract_mean)
        return grad_x, grad_weight, grad_bias if ctx.has_bias else None, None, None

    return backward


registration.register("layer_norm_channels", fake=_fake, fake_backward=_fake_backward,
                      setup_context=_setup_context, make_backward=_make_backward)
