"""torch.ops.pyairir.film_gelu: LUPI's FiLM modulation and GELU in one pass.

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/film_gelu.cpp; CUDA kernel
csrc/cuda/film_gelu.cu (binding in csrc/cuda/bindings); Triton kernel triton_kernels/film_gelu.py
(op pyairir::film_gelu_triton); reference pyairir/reference/film_gelu.py.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_image, check_like
from pyairir.ops import backend, registration
from pyairir.ops.layout import check_dense, dense_like, densified

OP = "pyairir::film_gelu"


def check_inputs(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    check_image(x, "x", OP)
    check_dense(x, "x", OP)
    for name, t in (("gamma", gamma), ("beta", beta)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(x.shape[:2]):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{OP}: {name} must have shape {tuple(x.shape[:2])} (one value per sample and channel "
                             f"of x), got {shape}")
        check_like(t, name, OP, x, "x")


def film_gelu(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """GELU(gamma ⊙ x + beta): x (B, C, H, W) (dense NCHW or channels_last; other strides are copied
    to NCHW), gamma and beta (B, C). Returns (B, C, H, W) in x's layout; differentiable in all three
    (LUPI Eq. 2)."""
    x = densified(x)
    check_inputs(x, gamma, beta)
    return registration.run("film_gelu", backend.implementation(x), reference.film_gelu, x, gamma.contiguous(),
                            beta.contiguous())


def _fake(x, gamma, beta):
    check_inputs(x, gamma, beta)
    return torch.empty_like(x)


def _fake_backward(grad_out, x, gamma, beta):
    return torch.empty_like(x), torch.empty_like(gamma), torch.empty_like(beta)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _make_backward(backward_op):
    def backward(ctx, grad):
        x, gamma, beta = ctx.saved_tensors
        return backward_op(dense_like(grad, x), x, gamma, beta)

    return backward


registration.register("film_gelu", fake=_fake, fake_backward=_fake_backward, setup_context=_setup_context,
                      make_backward=_make_backward)
