"""Switching a model between its eager reference and its fused kernels."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pyairir import runtime


def inference_memory(fast: bool) -> contextlib.AbstractContextManager:
    """pyairir.runtime.cached_memory() around a fast block's eager inference (autograd off), where
    its large activations can come from the cache of freed blocks; otherwise (training, or traced
    by torch.compile, whose generated code plans its own buffers) a scope that does nothing."""
    if fast and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return runtime.cached_memory()
    return contextlib.nullcontext()


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
