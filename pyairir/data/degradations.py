"""Synthetic degradations of a clean image x (3, H, W) in [0, 1], deterministic given a
torch.Generator. Gaussian noise follows PromptIR's protocol; rain, haze, low light and blur are
simple physical models, for demos and tests (the benchmarks' own degraded images are real data).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator, quantize: bool = True) -> torch.Tensor:
    """x + N(0, (sigma/255)^2), clipped to [0, 1]. quantize=True truncates to 8-bit levels as
    PromptIR does (np.clip(clean + noise * sigma, 0, 255).astype(np.uint8) on 0-255 images)."""
    noisy = (x * 255.0 + torch.randn(x.shape, generator=generator) * sigma).clamp(0, 255)
    if quantize:
        noisy = noisy.floor()
    return noisy / 255.0


def _line_kernel(length: int, angle: float) -> torch.Tensor:
    """A normalised (length x length) kernel: a line through the centre at `angle` radians."""
    size = length if length % 2 else length + 1
    kernel = torch.zeros(size, size)
    centre = size // 2
    for t in torch.linspace(-centre, centre, 4 * size):
        r, c = round(centre + t.item() * math.sin(angle)), round(centre + t.item() * math.cos(angle))
        kernel[r, c] = 1.0
    return kernel / kernel.sum()


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[0]
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x[None], (pad, pad, pad, pad), mode="replicate"), weight, groups=c)[0]


def rain(x: torch.Tensor, generator: torch.Generator, density: float | None = None) -> torch.Tensor:
    """Rain streaks: sparse bright drops smeared along one slanted direction, added to x."""
    _, h, w = x.shape
    density = density if density is not None else _uniform(generator, 0.004, 0.012)
    drops = (torch.rand(h, w, generator=generator) < density).float() * _uniform(generator, 0.6, 1.0)
    angle = math.pi / 2 + _uniform(generator, -0.4, 0.4)
    length = int(_uniform(generator, 9, 21))
    streaks = _filter(drops[None], _line_kernel(length, angle))[0] * length * 0.5
    return (x + streaks.clamp(0, 1)[None] * 0.8).clamp(0, 1)


def haze(x: torch.Tensor, generator: torch.Generator, beta: float | None = None,
         airlight: float | None = None) -> torch.Tensor:
    """The atmospheric scattering model I = J t + A (1 - t), t = exp(-beta d), with a synthetic
    depth d growing towards the top of the image plus smooth random variation."""
    _, h, w = x.shape
    beta = beta if beta is not None else _uniform(generator, 0.8, 1.8)
    airlight = airlight if airlight is not None else _uniform(generator, 0.75, 0.95)
    rows = torch.linspace(1.0, 0.2, h)[:, None].expand(h, w)
    smooth = F.interpolate(torch.rand(1, 1, 4, 4, generator=generator), size=(h, w), mode="bicubic",
                           align_corners=False)[0, 0]
    depth = (0.7 * rows + 0.3 * smooth).clamp(0, 1)
    t = torch.exp(-beta * depth)[None]
    return (x * t + airlight * (1 - t)).clamp(0, 1)


def low_light(x: torch.Tensor, generator: torch.Generator, gamma: float | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Underexposure: scale x^gamma, then a little sensor noise."""
    gamma = gamma if gamma is not None else _uniform(generator, 1.5, 2.5)
    scale = scale if scale is not None else _uniform(generator, 0.25, 0.5)
    dark = scale * x.clamp(0, 1) ** gamma
    return (dark + torch.randn(x.shape, generator=generator) * 0.01).clamp(0, 1)


def blur(x: torch.Tensor, generator: torch.Generator, length: int | None = None) -> torch.Tensor:
    """Linear motion blur of `length` pixels in a random direction."""
    length = length if length is not None else int(_uniform(generator, 5, 13))
    return _filter(x, _line_kernel(length, _uniform(generator, 0, math.pi))).clamp(0, 1)


SYNTHETIC = {
    "noise": lambda x, g: gaussian_noise(x, _uniform(g, 15, 50), g, quantize=False),
    "rain": rain,
    "haze": haze,
    "low_light": low_light,
    "blur": blur,
}


FIXED_NOISE = re.compile(r"noise_(\d+(?:\.\d+)?)")  # noise_25: sigma 25 exactly


def components(kind: str) -> list[str]:
    """The degradations a kind applies, in order: one of SYNTHETIC, noise_<sigma> (Gaussian noise of
    that sigma on the 0-255 scale, as PromptIR's noise_15/25/50 tasks), or a composite of those
    joined by '+' ("rain+haze", "low_light+noise_25": CDD-11's composites). ValueError if unknown."""
    parts = kind.split("+")
    unknown = [p for p in parts if p not in SYNTHETIC and not FIXED_NOISE.fullmatch(p)]
    if unknown:  # ("" splits into [""], which is unknown too)
        raise ValueError(f"degrade: unknown degradation {kind!r}; available: {', '.join(SYNTHETIC)}, noise_<sigma> "
                         "(e.g. noise_25), or several joined by '+' (e.g. rain+haze)")
    return parts


def degrade(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A synthetic degradation by name (see components): noise (sigma 15-50), noise_<sigma>, rain,
    haze, low_light, blur, or a composite such as rain+haze+noise_15, applied left to right."""
    for part in components(kind):
        fixed = FIXED_NOISE.fullmatch(part)
        x = gaussian_noise(x, float(fixed[1]), generator, quantize=False) if fixed else SYNTHETIC[part](x, generator)
    return x
