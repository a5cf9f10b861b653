"""torch.ops.pyairir.topk_prompt: prompt routing (PromptIR's prompt block and CPL's Sparse Prompt
Module, without their final conv) in one kernel: top-k gate, weighted sum of only the selected
components, bilinear resize.

Faces: schema in csrc/ops.cpp; C++ CPU kernel csrc/cpu/topk_prompt.cpp; CUDA kernel
csrc/cuda/topk_prompt.cu (binding in csrc/cuda/bindings); Triton kernel
triton_kernels/topk_prompt.py (op pyairir::topk_prompt_triton); reference
pyairir/reference/topk_prompt.py.
"""

from __future__ import annotations

import torch

from pyairir import reference
from pyairir._validation import check_like
from pyairir.ops import backend, registration

OP = "pyairir::topk_prompt"


def check_inputs(logits: torch.Tensor, prompts: torch.Tensor, height: int, width: int, k: int) -> None:
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 4 or prompts.shape[2] != prompts.shape[3] \
            or prompts.numel() == 0:
        shape = tuple(prompts.shape) if isinstance(prompts, torch.Tensor) else type(prompts).__name__
        raise ValueError(f"{OP}: prompts must be a non-empty (n, C, s, s) tensor of square components, got {shape}")
    if not prompts.is_floating_point():
        raise ValueError(f"{OP}: prompts must be a floating tensor, got {prompts.dtype}")
    n = prompts.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] != n or logits.shape[0] == 0:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{OP}: logits must have shape (B, n = {n}), got {shape}")
    check_like(logits, "logits", OP, prompts, "prompts")
    if height <= 0 or width <= 0:
        raise ValueError(f"{OP}: height and width must be positive, got {height}x{width}")
    if not 1 <= k <= n:
        raise ValueError(f"{OP}: k must be in [1, n = {n}], got {k}")


def topk_prompt(logits: torch.Tensor, prompts: torch.Tensor, height: int, width: int, k: int,
                renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, n), prompts (n, C, s, s) -> (prompt (B, C, height, width), selection (B, k) int64).

    See pyairir.reference.topk_prompt; differentiable in logits and prompts (only the selected
    components get gradient). selection: the indices used, for statistics.
    """
    check_inputs(logits, prompts, height, width, k)
    implementation = backend.implementation(prompts)
    if implementation == "reference":
        selection = torch.softmax(logits, dim=1).topk(k, dim=1).indices
        return reference.topk_prompt(logits, prompts, height, width, k, renormalize), selection
    out, _, selection = registration.run("topk_prompt", implementation, reference.topk_prompt, logits,
                                         prompts.contiguous(), height, width, k, renormalize)
    return out, selection


def _fake(logits, prompts, height, width, k, renormalize):
    check_inputs(logits, prompts, height, width, k)
    b, c = logits.shape[0], prompts.shape[1]
    return (prompts.new_empty((b, c, height, width)), prompts.new_empty((b, k)),
            torch.empty((b, k), dtype=torch.long, device=prompts.device))


def _fake_backward(grad_out, logits, prompts, k, renormalize):
    return torch.empty_like(logits), torch.empty_like(prompts)


def _setup_context(ctx, inputs, output):
    logits, prompts, height, width, k, renormalize = inputs
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(logits, prompts)
    ctx.k, ctx.renormalize = k, renormalize


def _make_backward(backward_op):
    def backward(ctx, grad_out, *_):
        logits, prompts = ctx.saved_tensors
        grad_logits, grad_prompts = backward_op(grad_out.contiguous(), logits, prompts, ctx.k, ctx.renormalize)
        return grad_logits, grad_prompts, None, None, None, None

    return backward


registration.register("topk_prompt", fake=_fake, fake_backward=_fake_backward, setup_context=_setup_context,
                      make_backward=_make_backward)
