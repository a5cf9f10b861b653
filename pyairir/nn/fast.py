"""Switching a model between its eager reference and its fused kernels."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pyairir import runtime
from pyairir.nn import prepacked


def inference_memory(fast: bool) -> contextlib.AbstractContextManager:
    """pyairir.runtime.cached_memory() around a fast block's eager inference (autograd off), where
    its large activations can come from the cache of freed blocks; otherwise (training, or traced
    by torch.compile, whose generated code plans its own buffers) a scope that does nothing."""
    if fast and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return runtime.cached_memory()
    return contextlib.nullcontext()


def compute_dtype(fast: bool, x: torch.Tensor) -> torch.dtype:
    """The dtype a fast layer computes on input x in: float32 for a bf16 CPU tensor in fast
    inference (autograd off, not traced by torch.compile) where pyairir.runtime.float32_for_bf16()
    (by default, a CPU without bf16 arithmetic); x's own otherwise. Such a layer converts x and its
    weights to float32 once and rounds its output back to x's dtype."""
    if (fast and x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and runtime.float32_for_bf16()):
        return torch.float32
    return x.dtype


def conv(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """module(x) with module's weight and bias in x's dtype: a bf16 model's convolution inside a
    layer that computes in float32 (compute_dtype), its converted weight prepacked once
    (pyairir.nn.prepacked)."""
    return module(x) if module.weight.dtype == x.dtype else prepacked.conv(module, x)


def standalone_conv(module: nn.Conv2d, x: torch.Tensor, fast: bool) -> torch.Tensor:
    """module(x) for a convolution of a fast model outside its blocks (patch embedding, resampling,
    output), computed in compute_dtype(fast, x), its weight prepacked (pyairir.nn.prepacked) in fast
    inference, and returned in x's dtype."""
    y = x.to(compute_dtype(fast, x))
    with inference_memory(fast):
        return (prepacked.conv(module, y) if fast else conv(module, y)).to(x.dtype)


def residual(x: torch.Tensor, y: torch.Tensor, fast: bool) -> torch.Tensor:
    """x + y for a block's residual connection, y the fresh output of the block's layer (nothing else
    holds it): in fast inference (autograd off, not traced) added into y in place, which spares
    writing a new tensor (an in-place add of two 96 x 512 x 512 float32 maps took 6.5 ms on a Xeon,
    the out-of-place one 10.4 ms with its output from the memory cache, 16 ms without)."""
    if (fast and not torch.is_grad_enabled() and not torch.compiler.is_compiling() and y.shape == x.shape
            and y.dtype == x.dtype and y.stride() == x.stride() and y.data_ptr() != x.data_ptr()):
        return y.add_(x)
    return x + y


def like(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """t in x's dtype: a module's parameter for an op whose inputs must share one dtype, e.g. fp32
    weights meeting bf16 activations under torch.autocast."""
    return t if t is None or t.dtype == x.dtype else t.to(x.dtype)


def is_pyairir(module: nn.Module) -> bool:
    """Whether module's class is defined by pyairir."""
    return type(module).__module__.startswith("pyairir.")


def set_fast(model: nn.Module, fast: bool = True, channels_last: bool | None = None) -> nn.Module:
    """Sets `fast` on every pyairir module inside `model` and returns the model.

    channels_last (default: the value of `fast`) also stores every 4-D convolution weight in
    channels_last, so that activations stay channels_last from the first convolution to the
    last (which `model.to(memory_format=...)` cannot do for models holding 5-D parameters,
    such as PromptIR's prompts). Parameters stay the same objects; the state_dict is unchanged.
    """
    for module in model.modules():
        if is_pyairir(module) and isinstance(getattr(module, "fast", None), bool):
            module.fast = fast
    if channels_last if channels_last is not None else fast:
        memory_format = torch.channels_last
    else:
        memory_format = torch.contiguous_format
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=memory_format)
    return model
