"""NAFNet's block (Chen et al., "Simple Baselines for Image Restoration", Fig. 3c).

    y = x + beta  * conv3(SCA(SG(conv2(conv1(LN(x))))))
    z = y + gamma * conv5(SG(conv4(LN(y))))
SimpleGate SG splits the channels in halves and multiplies them; Simplified
Channel Attention SCA(x) = x * conv(pool(x)), pool a global (or, in
NAFNetLocal, a local) average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops
from pyairir.nn import pointwise, prepacked
from pyairir.nn.fast import compute_dtype, conv, inference_memory, like, residual
from pyairir.nn.layer_norm import LayerNorm2d


class SimpleGate(nn.Module):
    """(B, 2C, H, W) -> (B, C, H, W): first half times second half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    """Keys (c channels, d = c * DW_Expand, f = c * FFN_Expand): conv1 (d, c), conv2 (d, 1, 3, 3) depthwise,
    conv3 (c, d/2), sca.1 (d/2, d/2), conv4 (f, c), conv5 (c, f/2), all with biases; norm1, norm2 (c,);
    beta, gamma (1, c, 1, 1), zero at init so the block starts as the identity."""

    def __init__(self, c: int, DW_Expand: int = 2, FFN_Expand: int = 2,  # noqa: N803
                 drop_out_rate: float = 0.0, fast: bool = False) -> None:
        super().__init__()
        dw_channel = c * DW_Expand
        self.conv1 = nn.Conv2d(c, dw_channel, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, groups=dw_channel, bias=True)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, kernel_size=1, bias=True)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1, bias=True))
        self.sg = SimpleGate()
        ffn_channel = FFN_Expand * c
        self.conv4 = nn.Conv2d(c, ffn_channel, kernel_size=1, bias=True)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, kernel_size=1, bias=True)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0.0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0.0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.fast = fast

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, c, H, W). fast=True fuses conv2 and the first SimpleGate in one op and folds
        the per-channel scales (beta, gamma, and for one image the global SCA) into the 1x1 convolutions'
        weights, sparing three passes over the activations; at inference the weights of conv1, conv4,
        conv5 (and conv3, see `attended`) are reordered for oneDNN once, not at every call
        (pyairir.nn.prepacked). A bf16 inp computes in float32 where the CPU has no bf16 arithmetic
        (pyairir.nn.fast.compute_dtype); the output is in inp's dtype. Where pyairir.nn.pointwise is
        usable (float32 channels_last on CPU, autograd off), the block is `fused`."""
        dtype = compute_dtype(self.fast, inp)
        if dtype != inp.dtype:
            return self.forward(inp.to(dtype)).to(inp.dtype)
        if self.fast and pointwise.usable(inp) and not (self.training and self.drops()):
            with inference_memory(self.fast):
                return self.fused(inp)
        with inference_memory(self.fast):
            x = prepacked.conv(self.conv1, self.norm1(inp)) if self.fast else self.conv1(self.norm1(inp))
            if not self.fast:
                x = self.sg(self.conv2(x))
                x = self.dropout1(self.conv3(x * self.sca(x)))
                y = inp + x * self.beta
                x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
                return y + x * self.gamma
            x = ops.gated_gelu(x, like(self.conv2.weight, x), like(self.conv2.bias, x), False)
            y = residual(inp, self.dropout1(self.attended(x)), self.fast)
            x = self.sg(prepacked.conv(self.conv4, self.norm2(y)))
            return residual(y, self.dropout2(prepacked.conv(self.conv5, x, self.gamma)), self.fast)

    def fused(self, inp: torch.Tensor) -> torch.Tensor:
        """The block in fused GEMMs (pyairir.nn.pointwise) and the depthwise filter with the first
        SimpleGate (ops.gated_gelu), inp (B, c, H, W) float32 channels_last: norm1 is conv1's prologue;
        the channel attention scales conv3's input channels and beta its outputs, its epilogue adds inp;
        norm2 and the second SimpleGate wrap conv4; gamma scales conv5, whose epilogue adds y. With the
        global pool, the block is two passes over the pixels (pointwise.nafblock): norm1 to the gate with
        the channel means, then SCA's conv and conv3 to conv5."""
        if not self.global_pool():  # NAFNetLocal: an attention per pixel, applied to x before conv3
            x = self.gated(inp)
            pool, channel_conv = self.sca
            y = pointwise.conv(self.conv3, x * conv(channel_conv, pool(x)).to(x.dtype), out_scale=self.beta,
                               residual=inp)
            x = pointwise.conv(self.conv4, y, norm=self.norm2, gate=True)
            return pointwise.conv(self.conv5, x, out_scale=self.gamma, residual=y)
        return pointwise.nafblock(self, inp)

    def gated(self, inp: torch.Tensor) -> torch.Tensor:
        """SimpleGate(conv2(conv1(norm1(inp)))) for `fused`: conv1 with norm1 as its prologue, then the
        depthwise conv2 and the gate in ops.gated_gelu."""
        x = pointwise.conv(self.conv1, inp, norm=self.norm1)
        return ops.gated_gelu(x, like(self.conv2.weight, x), like(self.conv2.bias, x), False)

    def drops(self) -> bool:
        """Whether either dropout is a real one (drop_out_rate > 0), which `fused` leaves out."""
        return not (isinstance(self.dropout1, nn.Identity) and isinstance(self.dropout2, nn.Identity))

    def global_pool(self) -> bool:
        """Whether SCA pools globally (NAFNet), not over local windows (NAFNetLocal's LocalAvgPool2d)."""
        pool = self.sca[0]
        return isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))

    def channel_attention(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """SCA's 1x1 conv on the global pool's means (B, C) -> (B, C), as a matrix-vector product
        (F.linear; as a convolution it took ATen's slow path), its weights in x's dtype."""
        channel_conv = self.sca[1]
        return F.linear(mean, like(channel_conv.weight.flatten(1), x), like(channel_conv.bias, x))

    def attended(self, x: torch.Tensor) -> torch.Tensor:
        """beta * conv3(SCA(x)) for the fast path, x (B, d/2, H, W); the global pool's conv by
        channel_attention. Where the image has fewer pixels than conv3 has outputs, scaling x by SCA
        costs less than scaling (and reordering) the weight, which then stays prepacked."""
        pool, channel_conv = self.sca
        if self.global_pool():
            scale = self.channel_attention(x.mean((2, 3)), x)[..., None, None]
        else:
            scale = conv(channel_conv, pool(x))
        if x.shape[-2] * x.shape[-1] < self.conv3.out_channels:
            return prepacked.conv(self.conv3, x * scale, self.beta)
        return scaled_conv1x1(self.conv3, x, self.beta, scale)


def scaled_conv1x1(conv: nn.Conv2d, x: torch.Tensor, out_scale: torch.Tensor,
                   in_scale: torch.Tensor | None = None) -> torch.Tensor:
    """out_scale * conv(x * in_scale) for a 1x1 conv (cout, cin), x (B, cin, H, W), out_scale (1, cout, 1, 1) and
    in_scale (B, cin, 1, 1) or (B, cin, H, W). The scales go into the weights, diag(out_scale) W diag(in_scale),
    and the bias, out_scale * bias, where they are per channel of the one image (an in_scale per pixel or
    per image of a batch is applied to x)."""
    weight = out_scale.reshape(-1, 1, 1, 1) * conv.weight
    if in_scale is not None:
        if x.shape[0] == 1 and in_scale.shape[-2:] == (1, 1):
            weight = weight * in_scale.reshape(1, -1, 1, 1)
        else:
            x = x * in_scale
    bias = None if conv.bias is None else out_scale.reshape(-1) * conv.bias
    return F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
