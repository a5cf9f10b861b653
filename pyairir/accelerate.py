"""pyairir.accelerate(model): put pyairir's fused kernels into any Restormer-family model.

Walks the model and replaces, in place, every submodule it recognises — by its
official class name *and* its structure (parameter names and shapes, conv
shapes), whichever package defined it — with the pyairir module that computes
the same function with fused kernels, holding the very same parameter tensors:

    official class        recognised by                                     becomes
    TransformerBlock      norm1, attn, norm2, ffn: LayerNorm, Attention,       pyairir.nn.TransformerBlock
                          LayerNorm, FeedForward as below (Restormer's block)
    LayerNorm             body = WithBias_/BiasFree_LayerNorm with weight(s)   pyairir.nn.LayerNorm
    LayerNorm2d           weight, bias (C,) and eps (NAFNet, CPLIR)           pyairir.nn.LayerNorm2d
    Attention             temperature, qkv 1x1, qkv_dwconv 3x3 dw, project_out pyairir.nn.MDTA
    FeedForward           project_in 1x1, dwconv 3x3 dw, project_out 1x1      pyairir.nn.GDFN
    NAFBlock              conv1..conv5, sca, norm1, norm2, beta, gamma         pyairir.nn.NAFBlock
    PromptGenBlock        prompt_param (1, n, C, s, s), linear_layer, conv3x3  pyairir.nn.PromptGenBlock
    CrossAttention_       temperature, q/kv 1x1 + 3x3 dw, project_out (SIPL)  pyairir.nn.CrossAttention
      RestormerV2
    Chanel_Cross_         the same, heads in `num_head` (AdaIR)              pyairir.nn.Chanel_Cross_Attention
      Attention

A whole TransformerBlock is swapped (its residual adds then run in place and its
norms in the sublayers' bands of rows, as in pyairir's own block) when each of its
four parts is recognised; otherwise its parts are swapped one by one. A module
whose name matches but whose structure does not is left alone and
reported as skipped, with the reason. Look-alikes with other names (e.g. SIPL's
DualGate_FeedForward, which has GDFN's parameters but another gate) are never
touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from pyairir.nn import (GDFN, MDTA, Chanel_Cross_Attention, LayerNorm, LayerNorm2d, NAFBlock, PromptGenBlock,
                        TransformerBlock, set_fast)
from pyairir.nn.proxy_fusion import CrossAttention
from pyairir.nn.fast import is_pyairir as _is_pyairir


@dataclass
class Swap:
    name: str  # qualified name in the model
    original: str  # module.Class of what was there
    replacement: str  # pyairir class now there


@dataclass
class AccelerateReport:
    swapped: list[Swap] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (qualified name, reason)

    def __str__(self) -> str:
        counts: dict[str, int] = {}
        for swap in self.swapped:
            counts[swap.replacement] = counts.get(swap.replacement, 0) + 1
        lines = [f"pyairir.accelerate: swapped {len(self.swapped)} modules"
                 + (": " + ", ".join(f"{n} x {k}" for k, n in sorted(counts.items())) if counts else "")]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


class Mismatch(Exception):
    """A module has an official class name but not the official structure."""


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise Mismatch(reason)


def _parameter(module: nn.Module, name: str, shape: tuple[int, ...] | None = None) -> nn.Parameter:
    value = getattr(module, name, None)
    _expect(isinstance(value, nn.Parameter), f"no parameter `{name}`")
    _expect(shape is None or tuple(value.shape) == shape, f"`{name}` has shape {tuple(value.shape)}, not {shape}")
    return value


def _conv(module: nn.Module, name: str, in_channels: int | None, kernel: int, depthwise: bool = False) -> nn.Conv2d:
    conv = getattr(module, name, None)
    _expect(type(conv) is nn.Conv2d, f"`{name}` is not an nn.Conv2d")
    _expect(conv.kernel_size == (kernel, kernel) and conv.stride == (1, 1) and conv.dilation == (1, 1),
            f"`{name}` is not a {kernel}x{kernel} stride-1 conv")
    _expect(conv.padding == (kernel // 2, kernel // 2) and conv.padding_mode == "zeros",
            f"`{name}` does not zero-pad by {kernel // 2}")
    _expect(in_channels is None or conv.in_channels == in_channels,
            f"`{name}` takes {conv.in_channels} channels, not {in_channels}")
    _expect(conv.groups == (conv.in_channels if depthwise else 1),
            f"`{name}` is not {'a depthwise' if depthwise else 'an ungrouped'} conv")
    _expect(not depthwise or conv.out_channels == conv.in_channels, f"`{name}` is not channel-preserving")
    return conv


def _new(cls, *args, **kwargs):
    """An instance built without allocating its parameters (they are replaced next)."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


def _layer_norm(module: nn.Module) -> nn.Module | None:
    body = getattr(module, "body", None)
    kind = type(body).__name__ if body is not None else None
    if kind == "LayerNorm2d":  # CPLIR: the body already works on (B, C, H, W); it is swapped itself
        return None
    _expect(kind in ("WithBias_LayerNorm", "BiasFree_LayerNorm"),
            f"its body is {kind}, not WithBias_LayerNorm, BiasFree_LayerNorm or LayerNorm2d")
    weight = _parameter(body, "weight")
    _expect(weight.dim() == 1, "body.weight is not a vector")
    replacement = _new(LayerNorm, weight.shape[0], "WithBias" if kind == "WithBias_LayerNorm" else "BiasFree",
                       fast=True)
    replacement.body.weight = weight
    if kind == "WithBias_LayerNorm":
        replacement.body.bias = _parameter(body, "bias", tuple(weight.shape))
    return replacement


def _layer_norm_2d(module: nn.Module) -> nn.Module:
    weight = _parameter(module, "weight")
    _expect(weight.dim() == 1, "weight is not a vector")
    bias = _parameter(module, "bias", tuple(weight.shape))
    eps = getattr(module, "eps", None)
    _expect(isinstance(eps, float), "no float `eps` attribute")
    replacement = _new(LayerNorm2d, weight.shape[0], eps, fast=True)
    replacement.weight, replacement.bias = weight, bias
    return replacement


def _attention(module: nn.Module) -> nn.Module:
    heads = getattr(module, "num_heads", None)
    _expect(isinstance(heads, int), "no int `num_heads` attribute")
    temperature = _parameter(module, "temperature", (heads, 1, 1))
    project_out = _conv(module, "project_out", None, 1)
    dim = project_out.out_channels
    qkv = _conv(module, "qkv", dim, 1)
    _expect(qkv.out_channels == 3 * dim, "`qkv` does not make 3 x dim channels")
    qkv_dwconv = _conv(module, "qkv_dwconv", 3 * dim, 3, depthwise=True)
    _expect(project_out.in_channels == dim and dim % heads == 0, "channels do not split into heads")
    replacement = _new(MDTA, dim, heads, project_out.bias is not None, fast=True)
    replacement.temperature, replacement.qkv, replacement.qkv_dwconv = temperature, qkv, qkv_dwconv
    replacement.project_out = project_out
    return replacement


def _cross_attention(module: nn.Module, heads_attribute: str = "num_heads",
                     cls: type[nn.Module] = CrossAttention) -> nn.Module:
    heads = getattr(module, heads_attribute, None)
    _expect(isinstance(heads, int), f"no int `{heads_attribute}` attribute")
    temperature = _parameter(module, "temperature", (heads, 1, 1))
    project_out = _conv(module, "project_out", None, 1)
    dim = project_out.out_channels
    q, kv = _conv(module, "q", dim, 1), _conv(module, "kv", dim, 1)
    _expect(q.out_channels == dim and kv.out_channels == 2 * dim, "`q`/`kv` do not make dim / 2 x dim channels")
    q_dwconv = _conv(module, "q_dwconv", dim, 3, depthwise=True)
    kv_dwconv = _conv(module, "kv_dwconv", 2 * dim, 3, depthwise=True)
    _expect(project_out.in_channels == dim and dim % heads == 0, "channels do not split into heads")
    replacement = _new(cls, dim, heads, project_out.bias is not None, fast=True)
    replacement.temperature, replacement.q, replacement.q_dwconv = temperature, q, q_dwconv
    replacement.kv, replacement.kv_dwconv, replacement.project_out = kv, kv_dwconv, project_out
    return replacement


def _feed_forward(module: nn.Module) -> nn.Module:
    project_in = _conv(module, "project_in", None, 1)
    dwconv = _conv(module, "dwconv", project_in.out_channels, 3, depthwise=True)
    project_out = _conv(module, "project_out", project_in.out_channels // 2, 1)
    _expect(project_in.out_channels % 2 == 0 and project_out.out_channels == project_in.in_channels,
            "project_in/project_out shapes do not form a gated feed-forward")
    replacement = _new(GDFN, project_in.in_channels, 1.0, project_in.bias is not None, fast=True)
    replacement.project_in, replacement.dwconv, replacement.project_out = project_in, dwconv, project_out
    return replacement


def _naf_block(module: nn.Module) -> nn.Module:
    conv1 = _conv(module, "conv1", None, 1)
    c = conv1.in_channels
    conv2 = _conv(module, "conv2", conv1.out_channels, 3, depthwise=True)
    conv3 = _conv(module, "conv3", conv1.out_channels // 2, 1)
    conv4 = _conv(module, "conv4", c, 1)
    conv5 = _conv(module, "conv5", conv4.out_channels // 2, 1)
    _expect(conv3.out_channels == c and conv5.out_channels == c, "conv3/conv5 do not return to c channels")
    sca = getattr(module, "sca", None)
    _expect(isinstance(sca, nn.Sequential) and len(sca) == 2, "`sca` is not Sequential(pool, conv)")
    replacement = _new(NAFBlock, c, conv1.out_channels // c, conv4.out_channels // c, fast=True)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "sca", "sg", "dropout1", "dropout2"):
        _expect(isinstance(getattr(module, name, None), nn.Module), f"no submodule `{name}`")
        setattr(replacement, name, getattr(module, name))
    replacement.norm1 = _replace_norm_2d(module.norm1)
    replacement.norm2 = _replace_norm_2d(module.norm2)
    replacement.beta = _parameter(module, "beta", (1, c, 1, 1))
    replacement.gamma = _parameter(module, "gamma", (1, c, 1, 1))
    return replacement


def _prompt_gen_block(module: nn.Module) -> nn.Module:
    prompt_param = _parameter(module, "prompt_param")
    _expect(prompt_param.dim() == 5 and prompt_param.shape[0] == 1 and prompt_param.shape[3] == prompt_param.shape[4],
            f"`prompt_param` has shape {tuple(prompt_param.shape)}, not (1, n, C, s, s)")
    _, n, dim, size, _ = prompt_param.shape
    linear = getattr(module, "linear_layer", None)
    _expect(type(linear) is nn.Linear and linear.out_features == n, f"`linear_layer` is not an nn.Linear(*, {n})")
    conv = _conv(module, "conv3x3", dim, 3)
    _expect(conv.out_channels == dim and conv.bias is None, "`conv3x3` is not a bias-free channel-preserving conv")
    replacement = _new(PromptGenBlock, dim, n, size, linear.in_features, fast=True)
    replacement.prompt_param, replacement.linear_layer, replacement.conv3x3 = prompt_param, linear, conv
    return replacement


def _transformer_block(module: nn.Module) -> nn.Module | None:
    """Restormer's block, x + attn(norm1(x)) then x + ffn(norm2(x)), as pyairir's TransformerBlock;
    None (its parts are then swapped one by one) unless all four parts are recognised."""
    parts = {"norm1": ("LayerNorm", _layer_norm), "attn": (("Attention", "MDTA"), _attention),
             "norm2": ("LayerNorm", _layer_norm), "ffn": (("FeedForward", "GDFN"), _feed_forward)}
    replacements = {}
    for name, (kinds, recognise) in parts.items():
        part = getattr(module, name, None)
        if not isinstance(part, nn.Module) or type(part).__name__ not in kinds:
            return None
        try:
            replacements[name] = part if _is_pyairir(part) else recognise(part)
        except Mismatch:
            return None
        if replacements[name] is None:
            return None
    replacement = _new(TransformerBlock, 1, 1, 1.0, False, "WithBias")
    for name, part in replacements.items():
        setattr(replacement, name, part)
    return replacement


def _replace_norm_2d(norm: nn.Module) -> nn.Module:
    _expect(type(norm).__name__ == "LayerNorm2d", f"its norm is {type(norm).__name__}, not LayerNorm2d")
    return _layer_norm_2d(norm)


# Official class name -> recogniser: returns the replacement, None to look inside instead,
# or raises Mismatch.
RECOGNISERS: dict[str, Callable[[nn.Module], nn.Module | None]] = {
    "TransformerBlock": _transformer_block,
    "LayerNorm": _layer_norm,
    "LayerNorm2d": _layer_norm_2d,
    "Attention": _attention,
    "MDTA": _attention,
    "FeedForward": _feed_forward,
    "GDFN": _feed_forward,
    "NAFBlock": _naf_block,
    "PromptGenBlock": _prompt_gen_block,
    "CrossAttention_RestormerV2": _cross_attention,
    "Chanel_Cross_Attention": lambda module: _cross_attention(module, "num_head", Chanel_Cross_Attention),
}


def accelerate(model: nn.Module, channels_last: bool = True) -> AccelerateReport:
    """Swaps the recognised submodules of `model` for fused pyairir modules, in place.

    The new modules hold the same parameter objects, so the state_dict, optimizers and
    checkpoints keep working. channels_last=True also stores every conv weight channels_last
    so activations stay channels_last (pyairir.nn.set_fast). Returns what was swapped and
    what was skipped (with the reason); outputs match the original within floating-point
    tolerance. A module that is itself recognised (e.g. a bare Attention) is swapped in place
    of nothing: pass its parent.
    """
    report = AccelerateReport()
    _walk(model, "", report)
    set_fast(model, fast=True, channels_last=channels_last)
    return report


def _walk(module: nn.Module, prefix: str, report: AccelerateReport) -> None:
    for name, child in list(module.named_children()):
        qualified = f"{prefix}{name}"
        recogniser = RECOGNISERS.get(type(child).__name__)
        if recogniser is not None and not _is_pyairir(child):
            try:
                replacement = recogniser(child)
            except Mismatch as reason:
                report.skipped.append((qualified, f"{type(child).__name__}: {reason}"))
                replacement = None
            if replacement is not None:
                assert not any(p.is_meta for p in replacement.parameters()), f"{qualified}: parameter left unset"
                replacement.train(child.training)
                setattr(module, name, replacement)
                report.swapped.append(Swap(qualified, f"{type(child).__module__}.{type(child).__qualname__}",
                                           f"pyairir.nn.{type(replacement).__name__}"))
                continue
        _walk(child, f"{qualified}.", report)


