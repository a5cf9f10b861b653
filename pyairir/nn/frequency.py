"""AdaIR's frequency modules (Cui et al., ICLR 2025, Sec. 3), under the official names of
c-yn/AdaIR net/model.py so that its checkpoints load:

- `FreModule` (the Adaptive Frequency Learning Block, AFLB): from the input image, resized to the
  decoder features y, a 3x3 conv gives features x; their 2-D spectrum is split by a centred
  rectangle of half-sides (h // 128 * r_h, w // 128 * r_w), r = sigmoid(rate_conv(avgpool(x)))
  (Eq. 1-2), into a low band (inside) and a high band (outside), each brought back with an
  inverse FFT and taken in magnitude (`band_split` computes the same with a DFT restricted to the
  few frequencies the rectangle can hold: matrix products, which export to ONNX). Each band
  attends to y (`Chanel_Cross_Attention`), the two are fused by `FreRefine` (the Frequency
  Modulation Module, FMoM), y attends to the fusion, and the result is para1 * out + para2 * y.
- `FreRefine`: high * ChannelGate(low) + low * SpatialGate(high), then a 1x1 conv.
- `Chanel_Cross_Attention`: MDTA's transposed attention with q from one tensor and k, v from
  another (the official spelling of the class name is kept).

As in the official code: the rectangle's half-sides are truncated to integers, so no gradient
reaches rate_conv, and for feature maps smaller than 256 pixels they are 0 (the low band is
empty and the high band is |x|); `conv` and `score_gen` are built but never used.
"""

from __future__ import annotations

from contextlib import nullcontext

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

    def band_halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(half_h, half_w), each (B, 1) int64: the half-sides (h // 128 * r_h, w // 128 * r_w) of the
        centred rectangle of x's shifted spectrum, truncated to integers (Eq. 1-2),
        r = sigmoid(rate_conv(avgpool x)) (B, 2)."""
        h, w = x.shape[-2:]
        reduce, gelu, expand = self.rate_conv
        rate = torch.sigmoid(conv(expand, gelu(conv(reduce, x.mean(dim=(2, 3), keepdim=True))))).flatten(1)
        half_h = (h // BAND_UNIT * rate[:, :1]).long()  # truncates, as the official int() does
        half_w = (w // BAND_UNIT * rate[:, 1:]).long()
        return half_h, half_w

    def bands(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(high, low): the magnitudes of conv1(image)'s spectrum outside and inside the rectangle of
        band_halves (see band_split). They are computed in float32 at least (and with autocast off)
        and come back in the input's dtype."""
        x = conv(self.conv1, image)
        half_h, half_w = self.band_halves(x)
        device = x.device.type
        # float32 under autocast too: high is x less low, which bf16 products would blur
        with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
            high, low = band_split(x.to(torch.promote_types(x.dtype, torch.float32)), half_h, half_w)
        return high.to(x.dtype), low.to(x.dtype)


def band_split(x: torch.Tensor, half_h: torch.Tensor, half_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, h, w) real, half_h, half_w (B, 1) int -> (high, low) (B, C, h, w):
    low = |ifft2(fft2(x) * M)|, high = |ifft2(fft2(x) * (1 - M))| with M the frequencies
    -half_h <= k < half_h, -half_w <= l < half_w (mod h, w): the official centred rectangle of the
    shifted spectrum, shifted back.

    Computed as a DFT restricted to the frequencies the rectangle can hold (-r <= k < r, r = h // 128 + 1):
    with E_h[k, n] = exp(-2 pi i k n / h) for those k, low = E_h^H (M * (E_h x E_w^T)) conj(E_w) / (h w)
    and high = |x - that|. In exact arithmetic this is the FFT's result; it costs O(h w) per channel
    for the few frequencies involved, uses only matrix products, cos and sin (so it exports to ONNX,
    which has no FFT in the TorchScript exporter), and its gradient is autograd's through them."""
    h, w = x.shape[-2:]
    (cos_h, sin_h), m_h = _band_basis(h, half_h, x)
    (cos_w, sin_w), m_w = _band_basis(w, half_w, x)
    k_h, k_w = cos_h.shape[0], cos_w.shape[0]  # K and L below
    # Complex products as real ones on stacked real and imaginary parts, one matrix product per step.
    # x E_w^T = [xr, xi] (B, C, h, 2L), E = cos - i sin
    xz = x @ torch.cat([cos_w, -sin_w]).T
    # E_h [xr, xi] = [zr, zi] (B, C, K, L)
    p = torch.cat([cos_h, sin_h]) @ xz
    zr = p[..., :k_h, :k_w] + p[..., k_h:, k_w:]
    zi = p[..., :k_h, k_w:] - p[..., k_h:, :k_w]
    mask = (m_h[:, None, :, None] * m_w[:, None, None, :]) / (h * w)
    zr, zi = zr * mask, zi * mask
    # E_h^H z = [yr, yi] (B, C, h, 2L), E^H = cos^T + i sin^T
    y = torch.cat([cos_h.T, sin_h.T], dim=1) @ torch.cat([torch.cat([zr, zi], -1), torch.cat([-zi, zr], -1)], -2)
    # [yr, yi] conj(E_w) = [low_r, low_i] (B, C, h, 2w), conj(E) = cos + i sin
    low = y @ torch.cat([torch.cat([cos_w, sin_w], 1), torch.cat([-sin_w, cos_w], 1)])
    low_r, low_i = low[..., :w], low[..., w:]
    return _magnitude(x - low_r, low_i), _magnitude(low_r, low_i)


def _band_basis(n: int, half: torch.Tensor, like: torch.Tensor
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """((cos, sin) (K, n) of 2 pi k j / n, mask (B, K)) for the K = 2 (n // 128 + 1) frequencies
    k = -K/2 .. K/2 - 1 (the rectangle's half-side is below n // 128 + 1); mask[b, k] = -half[b] <= k < half[b].
    The phase k j is reduced mod n in integers, so the angle stays below 2 pi in any precision."""
    reach = n // BAND_UNIT + 1
    k = torch.arange(-reach, reach, device=like.device)
    j = torch.arange(n, device=like.device)
    angle = ((k[:, None] * j[None, :]) % n).to(like.dtype) * (2 * torch.pi / n)
    mask = ((k[None, :] >= -half) & (k[None, :] < half)).to(like.dtype)
    return (torch.cos(angle), torch.sin(angle)), mask


def _magnitude(real: torch.Tensor, imaginary: torch.Tensor) -> torch.Tensor:
    """|real + i imaginary|, with gradient 0 where it is 0 (as complex abs() has), not sqrt's NaN."""
    square = real * real + imaginary * imaginary
    positive = square > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, square, torch.ones_like(square))),
                       torch.zeros_like(square))
