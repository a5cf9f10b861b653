"""Convolutions whose weights oneDNN reorders once, not at every call, for inference.

F.conv2d on a channels_last float32 tensor runs oneDNN, which first reorders the plain
(cout, cin/groups, kh, kw) weight into its blocked layout, at every call. Where the GEMM is small
(NAFNet's deep levels: 512 channels at 16x16 pixels for a 256x256 image) that reorder of a cold
weight costs about as much as the product itself. Here the reordered weight is kept per module,
keyed on what it was made from (the storage and version counter of the weight, bias and scale,
and the input's shape and dtype; the entry holds those tensors, so no replacement can take over
their storage and match), and made again when any of it changes: an optimizer step,
load_state_dict, an in-place update under no_grad, a new Parameter or `.to()` invalidates it
(in-place writes through `.data`, which skip the version counter, do not). A weight of another
dtype than the input (a bf16 model computing in float32, pyairir.nn.fast.compute_dtype) is
converted when it is packed. The copies live in a weak dictionary, so they go with their module
and are never saved; they hold one more copy of those weights while the module lives.
"""

from __future__ import annotations

import weakref
from typing import Callable, TypeVar

import torch
from torch import nn

# conv -> (key, the tensors it was made from, (reordered weight, bias times the scale)): see cached()
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
T = TypeVar("T")


def available() -> bool:
    """Whether this torch has oneDNN and the convolution ops that take a reordered weight."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


def conv(module: nn.Conv2d, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """out_scale * module(x) for a convolution `module`, x (B, cin, H, W) in float32 or module's
    dtype, out_scale (1, cout, 1, 1) or None -> (B, cout, H', W') in x's dtype.

    Prepacked (see the module's docstring) for x float32 channels_last on CPU with autograd off,
    outside torch.compile, and numeric zero padding; otherwise the module's own convolution with
    its weight and bias in x's dtype and the scale folded into them.
    """
    if not _packable(x, module):
        if out_scale is None and module.weight.dtype == x.dtype:
            return module(x)
        weight, bias = _scaled(module, out_scale)
        return module._conv_forward(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    geometry = (list(module.padding), list(module.stride), list(module.dilation), module.groups)

    def reorder() -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = _scaled(module, out_scale)
        weight = weight.to(x.dtype).contiguous().to_mkldnn()
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight, *geometry, list(x.shape))
        return packed, None if bias is None else bias.to(x.dtype)

    sources = tuple(t for t in (module.weight, module.bias, out_scale) if t is not None)
    packed, bias = cached(_PACKED, module, sources, (tuple(x.shape), x.dtype), reorder)
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, *geometry, "none", [None], "")


def cached(cache: weakref.WeakKeyDictionary, module: nn.Module, sources: tuple[torch.Tensor, ...], extra: tuple,
           make: Callable[[], T]) -> T:
    """make()'s result for `module`, kept in `cache` (a weak dictionary: it goes with the module) and made
    again when `extra` or the storage, version counter or dtype of any of `sources` (the tensors it is
    made from) changes. The entry holds `sources`, so that no replacement can take over their storage
    and match. Used by this module's reordered weights and by pyairir.nn.pointwise's packed ones."""
    key = (extra, tuple((t.data_ptr(), t._version, t.dtype) for t in sources))
    entry = cache.get(module)
    if entry is None or entry[0] != key:
        entry = (key, sources, make())
        cache[module] = entry
    return entry[2]


def _scaled(module: nn.Conv2d, out_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """module's weight and bias, times out_scale per output channel if given."""
    if out_scale is None:
        return module.weight, module.bias
    bias = None if module.bias is None else out_scale.reshape(-1) * module.bias
    return out_scale.reshape(-1, 1, 1, 1) * module.weight, bias


def _packable(x: torch.Tensor, module: nn.Conv2d) -> bool:
    return (not torch.is_grad_enabled() and not torch.compiler.is_compiling() and x.device.type == "cpu"
            and x.dtype == torch.float32 and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str) and available())
