"""A restoration model's last layer for CPU inference: a 3x3 convolution from many channels to the few
of an image, with the image it restores added (csrc/cpu/output_conv.cpp):

    output_conv.conv(module, x, residual) = module(x) + residual

oneDNN vectorises a convolution over its output channels, of which an image has 3: NAFNet-w32's
`ending` (32 channels to 3 at 256x256) ran at 45 GFLOP/s where its 1x1 convolutions ran at 300.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir.nn import pointwise

MAX_OUTPUTS = 4  # csrc/cpu/output_conv.cpp's MAX_OUTPUTS


def usable(module: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor) -> bool:
    """Whether conv() runs on module, x and residual: a 3x3 convolution with stride 1, zero padding 1, one
    group and at most MAX_OUTPUTS output channels; x where pointwise.usable (float32 channels_last on
    CPU, autograd off, not compiling); residual float32 on CPU, shaped like the output."""
    return (module.kernel_size == (3, 3) and module.stride == (1, 1) and module.padding == (1, 1)
            and module.dilation == (1, 1) and module.groups == 1 and module.padding_mode == "zeros"
            and module.out_channels <= MAX_OUTPUTS and pointwise.usable(x)
            and residual.dtype == torch.float32 and residual.device.type == "cpu"
            and residual.shape == (x.shape[0], module.out_channels, *x.shape[2:]))


def conv(module: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """module(x) + residual where usable(module, x, residual); x (B, C, H, W), residual (B, O, H, W) in any
    layout. Returns (B, O, H, W) float32 channels_last."""
    weight = module.weight.detach().float().contiguous()
    bias = torch.zeros(module.out_channels) if module.bias is None else module.bias.detach().float()
    return torch.ops.pyairir_cpu.output_conv(x, weight, bias, residual)
