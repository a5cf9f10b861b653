"""1x1 convolutions with a LayerNorm before them and a SimpleGate, scales and a residual add after
them fused in, for CPU inference (the GEMM in csrc/cpu/pointwise_conv.cpp).

    conv(module, x, norm=n, gate=True, out_scale=s, in_scale=c, residual=r)
        = r + G(s * module(n(x) * c)),   G(z) = z[:, :N/2] * z[:, N/2:] with gate
    conv(module, x, upscale=2, residual=r) = r + pixel_shuffle(module(x), 2)

NAFNet's block is four such convolutions around one depthwise filter, and its decoder's upsampling a
convolution, a PixelShuffle and the skip connection's add; run by oneDNN, each convolution leaves the
norm before it, the gate, the shuffle and the residual add after it to passes of their own over the
activations.
The packed weight (the norm's affine and out_scale folded in, in float64, then rounded to float32)
is kept per module by pyairir.nn.prepacked.cached: made again when any tensor folded in changes.
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import torch
from torch import nn

from pyairir import runtime
from pyairir.nn import prepacked

# conv -> (key, the tensors it was made from, (packed weight, packed bias)): see prepacked.cached
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
# NAFBlock -> (key, the tensors it was made from, _Plan): see _plan
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


@functools.cache
def available() -> bool:
    """Whether pyairir._C, with the CPU GEMM, is built (asked once: usable() asks at every block)."""
    try:
        import pyairir._C  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch.ops.pyairir_cpu, "pointwise_conv")


def usable(x: torch.Tensor) -> bool:
    """Whether conv() runs the fused GEMM on x: float32 (B, C, H, W), non-empty, dense channels_last on
    CPU, autograd off, outside torch.compile, and not under a CPU torch.autocast that this CPU runs in
    bf16 hardware (pyairir.runtime.float32_for_bf16() off: oneDNN's bf16 convolutions are then faster
    than this float32 GEMM; on other CPUs autocast's bf16 would be emulated, and float32 is faster)."""
    return (not torch.is_grad_enabled() and not torch.compiler.is_compiling() and x.device.type == "cpu"
            and x.dtype == torch.float32 and x.dim() == 4 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_autocast_enabled("cpu") and not runtime.float32_for_bf16()) and available())


def conv(module: nn.Conv2d, x: torch.Tensor, *, norm: nn.Module | None = None, gate: bool = False,
         out_scale: torch.Tensor | None = None, in_scale: torch.Tensor | None = None,
         residual: torch.Tensor | None = None, upscale: int = 1) -> torch.Tensor:
    """residual + G(out_scale * module(norm(x) * in_scale)) for a 1x1 convolution `module` (N, K, 1, 1)
    on x (B, K, H, W) where usable(x).

    norm: a LayerNorm over channels with `weight`, `bias` (K,) and `eps` (NAFNet's LayerNorm2d), not with
    in_scale;
    gate: SimpleGate, output N/2 channels; out_scale (1, N, 1, 1); in_scale (B, K) (one scale per
    image and input channel: NAFNet's channel attention); upscale r: the output pixel-shuffled
    (torch.nn.PixelShuffle(r)), not with gate or in_scale; residual shaped like the output,
    channels_last. Returns (B, N, H, W), (B, N/2, H, W) with gate or (B, N/r^2, rH, rW) with upscale,
    float32 channels_last.
    """
    if module.kernel_size != (1, 1) or module.stride != (1, 1) or module.groups != 1 or module.padding != (0, 0):
        raise ValueError(f"pointwise.conv: module must be a 1x1 convolution with stride 1, no padding and one group, "
                         f"got {module}")
    if norm is not None and in_scale is not None:
        raise ValueError("pointwise.conv: in_scale cannot follow the norm (the norm's bias is folded into the "
                         "packed bias, before any scale of the input); give one or the other")
    if gate and out_scale is not None:
        raise ValueError("pointwise.conv: out_scale cannot be folded through the gate; give one or the other")
    packed, packed_bias = packed_weight(module, norm, gate, out_scale, upscale)
    out_channels = module.out_channels // 2 if gate else module.out_channels // upscale ** 2
    eps = float(norm.eps) if norm is not None else 0.0
    return torch.ops.pyairir_cpu.pointwise_conv(x, packed, packed_bias, out_channels, gate, norm is not None, eps,
                                                upscale, in_scale, residual)


def nafblock(block: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """NAFNet's block (with SCA's global pool) in two passes over its pixels (csrc/cpu/pointwise_conv.cpp):
    nafblock_head, then nafblock_tail. inp (B, c, H, W) float32 channels_last where usable(); block a NAFBlock.
    Returns (B, c, H, W) float32 channels_last."""
    plan = _plan(block)
    t, mean = torch.ops.pyairir_cpu.nafblock_head(inp, *plan.head, plan.eps[0])
    return torch.ops.pyairir_cpu.nafblock_tail(t, mean, inp, *plan.tail, plan.eps[1])


def nafblock_head(block: nn.Module, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first half of NAFNet's block in one pass over its pixels: t = SimpleGate(conv2(conv1(norm1(inp))))
    and t's channel means (the channel attention's pool), conv1's outputs kept in cache. inp (B, c, H, W)
    float32 channels_last where usable(); block a NAFBlock. Returns t (B, c', H, W) channels_last and the
    means (B, c')."""
    plan = _plan(block)
    return torch.ops.pyairir_cpu.nafblock_head(inp, *plan.head, plan.eps[0])


def nafblock_tail(block: nn.Module, t: torch.Tensor, mean: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """The second half of NAFNet's block in one pass over its pixels: s = SCA's conv(mean),
    y = inp + beta * conv3(t * s), out = y + gamma * conv5(SimpleGate(conv4(norm2(y)))), equal to conv() three
    times but with y and the gate's output kept in cache. t (B, c', H, W) the first SimpleGate's output, mean
    (B, c') its channel means, inp (B, c, H, W) the block's input, all float32 channels_last where usable();
    block a NAFBlock."""
    plan = _plan(block)
    return torch.ops.pyairir_cpu.nafblock_tail(t, mean, inp, *plan.tail, plan.eps[1])


class _Plan(NamedTuple):
    """A NAFBlock's tensors as nafblock_head and nafblock_tail take them, and its norms' eps."""

    head: tuple[torch.Tensor, ...]  # w1, b1 (norm1 folded), conv2's weight and bias
    tail: tuple[torch.Tensor, ...]  # SCA's conv (matrix, bias), w3, b3 (beta), w4, b4 (norm2, gate), w5, b5 (gamma)
    eps: tuple[float, float]


def _plan(block: nn.Module) -> _Plan:
    """block's _Plan, made once and kept (prepacked.cached: made again when any tensor it is made from
    changes): one lookup per block instead of one per weight."""
    # The tensors straight from the modules' parameter dictionaries: block.parameters() alone took 18 us.
    modules = block._modules
    sources = tuple(p for name in _PLANNED for p in modules[name]._parameters.values() if p is not None)
    sources += tuple(p for p in (*modules["sca"]._modules["1"]._parameters.values(), block.beta, block.gamma)
                     if p is not None)
    eps = (float(modules["norm1"].eps), float(modules["norm2"].eps))
    return prepacked.cached(_PLANS, block, sources, eps, lambda: _make_plan(block, eps))


_PLANNED = ("conv1", "conv2", "conv3", "conv4", "conv5", "norm1", "norm2")  # with SCA's conv, beta and gamma


def _make_plan(block: nn.Module, eps: tuple[float, float]) -> _Plan:
    attention = block.sca[1]
    return _Plan(
        head=(*_pack(block.conv1, block.norm1, False, None, 1), _float(block.conv2.weight),
              _bias(block.conv2)),
        tail=(_float(attention.weight.flatten(1)), _bias(attention),
              *_pack(block.conv3, None, False, block.beta, 1), *_pack(block.conv4, block.norm2, True, None, 1),
              *_pack(block.conv5, None, False, block.gamma, 1)),
        eps=eps)


def _float(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().contiguous()


def _bias(module: nn.Conv2d) -> torch.Tensor:
    return torch.zeros(module.out_channels) if module.bias is None else _float(module.bias)


def packed_weight(module: nn.Conv2d, norm: nn.Module | None = None, gate: bool = False,
                  out_scale: torch.Tensor | None = None, upscale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """module's weight and bias as conv() runs them (see conv), packed once and kept per module."""
    sources = tuple(t for t in (module.weight, module.bias, out_scale, *(() if norm is None else (norm.weight, norm.bias)))
                    if t is not None)
    return prepacked.cached(_PACKED, module, sources, (gate, upscale, norm is not None),
                            lambda: _pack(module, norm, gate, out_scale, upscale))


def _pack(module: nn.Conv2d, norm: nn.Module | None, gate: bool, out_scale: torch.Tensor | None,
          upscale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed weight and bias of out_scale * module(norm(.)), folded in float64."""
    weight = module.weight.detach().double().flatten(1)
    bias = torch.zeros(weight.shape[0], dtype=torch.float64) if module.bias is None else module.bias.detach().double()
    if out_scale is not None:
        scale = out_scale.detach().double().reshape(-1)
        weight, bias = scale[:, None] * weight, scale * bias
    if norm is not None:
        if norm.bias is not None:
            bias = bias + weight @ norm.bias.detach().double()
        weight = weight * norm.weight.detach().double()
    return torch.ops.pyairir_cpu.pack_pointwise(weight.float().contiguous(), bias.float(), gate, upscale)
