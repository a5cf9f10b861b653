"""AdaIR's frequency modules (Cui et al., ICLR 2025, Sec. 3), under the official names of
c-yn/AdaIR net/model.py so that its checkpoints load:

- `FreModule` (the Adaptive Frequency Learning Block, AFLB): from the input image, resized to the
  decoder features y, a 3x3 conv gives features x; their 2-D spectrum is split by a centred
  rectangle of half-sides (h // 128 * r_h, w // 128 * r_w), r = sigmoid(rate_conv(avgpool(x)))
  (Eq. 1-2), into a low band (inside) and a high band (outside), each brought back with an
  inverse FFT and taken in magnitude. Each band attends to y (`Chanel_Cross_Attention`), the two
  are fused by `FreRefine` (the Frequency Modulation Module, FMoM), y attends to the fusion, and
  the result is para1 * out + para2 * y.
- `FreRefine`: high * ChannelGate(low) + low * SpatialGate(high), then a 1x1 conv.
- `Chanel_Cross_Attention`: MDTA's transposed attention with q from one tensor and k, v from
  another (the official spelling of the class name is kept).

As in the official code: the rectangle's half-sides are truncated to integers, so no gradient
reaches rate_conv, and for feature maps smaller than 256 pixels they are 0 (the low band is
empty and the high band is |x|); `conv` and `score_gen` are built but never used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops, reference
from pyairir.nn.fast import compute_dtype, conv, like

BAND_UNIT = 128  # the official fft(x, n=128): half-sides are multiples of size // 128


class Chanel_Cross_Attention(nn.Module):  # noqa: N801 (the official name)
    """Keys: temperature (heads, 1, 1); q (C, C, 1, 1); q_dwconv (C, 1, 3, 3); kv (2C, C, 1, 1);
    kv_dwconv (2C, 1, 3, 3); project_out (C, C, 1, 1)."""

    def __init__(self, dim: int, num_head: int, bias: bool, fast: bool = False) -> None:
        super().__init__()
        if dim % num_head:
            raise ValueError(f"Chanel_Cross_Attention: dim ({dim}) must be divisible by num_head ({num_head})")
        self.num_head = num_head
        self.temperature = nn.Parameter(torch.ones(num_head, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.fast = fast

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, C, H, W) -> (B, C, H, W): queries from x attend to keys and values from y."""
        if x.shape != y.shape:
            raise ValueError(f"Chanel_Cross_Attention: x and y must have one shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        if self.fast and not torch.is_grad_enabled():  # depthwise convs and project_out into mdta (see MDTA)
            dtype = compute_dtype(self.fast, x)  # float32 for a bf16 model on a CPU without bf16 arithmetic
            q = conv(self.q, x.to(dtype))
            k, v = conv(self.kv, y.to(dtype)).chunk(2, dim=1)
            weight = torch.cat([self.q_dwconv.weight, self.kv_dwconv.weight])
            bias = None if self.q_dwconv.bias is None else torch.cat([self.q_dwconv.bias, self.kv_dwconv.bias])
            return ops.mdta(q, k, v, like(self.temperature, q), self.num_head, like(weight, q), like(bias, q),
                            like(self.project_out.weight, q), like(self.project_out.bias, q)).to(x.dtype)
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        if self.fast:
            out = ops.mdta(q, k, v, like(self.temperature, q), self.num_head)
        else:
            out = reference.mdta(q, k, v, self.temperature, self.num_head)
        return self.project_out(out)



class SpatialGate(nn.Module):
    """x (B, C, H, W) -> sigmoid(conv7x7([max_c x, mean_c x])) (B, 1, H, W). Keys: spatial (1, 2, 7, 7)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(conv(self.spatial, pooled))


class ChannelGate(nn.Module):
    """x (B, C, H, W) -> sigmoid(mlp(avgpool x) + mlp(maxpool x)) (B, C, 1, 1), the MLP C -> C/16 -> C.
    Keys: mlp.0 (C/16, C, 1, 1), mlp.2 (C, C/16, 1, 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim // 16, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(dim // 16, dim, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._mlp(x.mean(dim=(2, 3), keepdim=True)) + self._mlp(x.amax(dim=(2, 3), keepdim=True)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        reduce, relu, expand = self.mlp
        return conv(expand, relu(conv(reduce, x)))


class FreRefine(nn.Module):
    """(low, high) (B, C, H, W) -> proj(high * ChannelGate(low) + low * SpatialGate(high)) (FMoM).
    Keys: SpatialGate, ChannelGate, proj (C, C, 1, 1) with bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = SpatialGate()  # noqa: N815 (the official attribute names)
        self.ChannelGate = ChannelGate(dim)  # noqa: N815
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return conv(self.proj, high * self.ChannelGate(low) + low * self.SpatialGate(high))


class FreModule(nn.Module):
    """(image (B, in_dim, H0, W0), y (B, C, H, W)) -> (B, C, H, W): the AFLB (see the module docstring).
    Keys: para1, para2 (C, 1, 1); conv, conv1 (C, in_dim, 3, 3); score_gen (2, 2, 7, 7) and bias;
    channel_cross_l, channel_cross_h, channel_cross_agg; frequency_refine; rate_conv.0 (C/8, C, 1, 1),
    rate_conv.2 (2, C/8, 1, 1)."""

    def __init__(self, dim: int, num_heads: int, bias: bool, in_dim: int = 3, fast: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)  # unused, as in the official code
        self.conv1 = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)
        self.score_gen = nn.Conv2d(2, 2, 7, padding=3)  # unused, as in the official code
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = Chanel_Cross_Attention(dim, num_heads, bias)
        self.channel_cross_h = Chanel_Cross_Attention(dim, num_heads, bias)
        self.channel_cross_agg = Chanel_Cross_Attention(dim, num_heads, bias)
        self.frequency_refine = FreRefine(dim)
        self.rate_conv = nn.Sequential(nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(),
                                       nn.Conv2d(dim // 8, 2, 1, bias=False))
        self.fast = fast

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """fast: a bf16 y computes in float32 where the CPU has no bf16 arithmetic
        (pyairir.nn.fast.compute_dtype); the output is in y's dtype."""
        dtype = compute_dtype(self.fast, y)
        x = F.interpolate(x.to(dtype), y.shape[-2:], mode="bilinear", align_corners=False)
        features = y.to(dtype)
        high, low = self.bands(x)
        high = self.channel_cross_l(high, features)  # the official names: _l takes the high band, _h the low one
        low = self.channel_cross_h(low, features)
        out = self.channel_cross_agg(features, self.frequency_refine(low, high))
        return (out * like(self.para1, out) + features * like(self.para2, out)).to(y.dtype)

    def band_mask(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w): 1 inside the centred rectangle of half-sides (h // 128 * r_h, w // 128 * r_w),
        truncated to integers, r = sigmoid(rate_conv(avgpool x)) (B, 2)."""
        h, w = x.shape[-2:]
        reduce, gelu, expand = self.rate_conv
        rate = torch.sigmoid(conv(expand, gelu(conv(reduce, x.mean(dim=(2, 3), keepdim=True))))).flatten(1)
        half_h = (h // BAND_UNIT * rate[:, 0]).int()[:, None]  # .int() truncates, as the official code does
        half_w = (w // BAND_UNIT * rate[:, 1]).int()[:, None]
        rows = torch.arange(h, device=x.device)[None]
        cols = torch.arange(w, device=x.device)[None]
        inside_h = (rows >= h // 2 - half_h) & (rows < h // 2 + half_h)  # (B, h)
        inside_w = (cols >= w // 2 - half_w) & (cols < w // 2 + half_w)  # (B, w)
        return (inside_h[:, :, None] & inside_w[:, None, :]).to(x.dtype)[:, None]

    def bands(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(high, low): the magnitudes of conv1(image)'s spectrum outside and inside band_mask.
        The transforms run in float32 at least (torch has no bf16/fp16 FFT on the CPU); the bands
        come back in the input's dtype."""
        x = conv(self.conv1, image)
        h, w = x.shape[-2:]
        mask = self.band_mask(x)
        # The mask is centred on the shifted spectrum: shift it back instead of shifting the spectrum.
        mask = torch.roll(mask, shifts=(-(h // 2), -(w // 2)), dims=(2, 3))
        wide = torch.promote_types(x.dtype, torch.float32)
        spectrum = torch.fft.fft2(x.to(wide), norm="forward")
        high = torch.fft.ifft2(spectrum * (1 - mask.to(wide)), norm="forward").abs()
        low = torch.fft.ifft2(spectrum * mask.to(wide), norm="forward").abs()
        return high.to(x.dtype), low.to(x.dtype)
