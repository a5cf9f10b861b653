"""Synthetic degradations: deterministic given a generator, with the requested statistics."""

from __future__ import annotations

import pytest
import torch

from pyairir.data import degrade, gaussian_noise
from pyairir.data.degradations import SYNTHETIC, haze


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_noise_has_the_requested_sigma(sigma):
    clean = torch.full((3, 256, 256), 0.5)  # mid-grey: no clipping at sigma 50 (4 sigma = 200 < 127.5? no) -> measure below
    noisy = gaussian_noise(clean, sigma, generator(), quantize=False)
    measured = ((noisy - clean) * 255).std().item()
    # clipping at 0 and 255 trims the tails beyond 127.5 / sigma standard deviations
    assert measured == pytest.approx(sigma, rel=0.02 if sigma < 50 else 0.05)


def test_quantized_noise_is_on_8_bit_levels_like_promptir():
    noisy = gaussian_noise(torch.full((3, 64, 64), 0.5), 25, generator(), quantize=True)
    levels = noisy * 255
    assert torch.equal(levels, levels.floor())
    assert 0 <= levels.min() and levels.max() <= 255


@pytest.mark.parametrize("kind", sorted(SYNTHETIC))
def test_deterministic_and_in_range(kind):
    clean = torch.rand(3, 48, 40, generator=generator(1))
    a, b = degrade(clean, kind, generator(3)), degrade(clean, kind, generator(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, degrade(clean, kind, generator(4)))
    assert a.shape == clean.shape and 0 <= a.min() and a.max() <= 1
    assert (a - clean).abs().mean() > 0.005


def test_haze_follows_the_scattering_model():
    clean = torch.zeros(3, 32, 32)
    hazy = haze(clean, generator(), beta=1.0, airlight=0.9)
    # J = 0: I = A (1 - t) with t = exp(-beta d) in [exp(-1), 1): between 0 and A (1 - e^-1)
    assert hazy.max() <= 0.9 * (1 - torch.exp(torch.tensor(-1.0))) + 1e-6 and hazy.min() >= 0
    assert hazy[:, 0].mean() > hazy[:, -1].mean()  # farther (top) is hazier


def test_fixed_noise_and_composites_apply_each_part_in_order():
    clean = torch.rand(3, 48, 40, generator=generator(1))
    g = generator(5)
    expected = gaussian_noise(haze(SYNTHETIC["rain"](clean, g), g), 25, g, quantize=False)
    assert torch.equal(degrade(clean, "rain+haze+noise_25", generator(5)), expected)
    assert torch.equal(degrade(clean, "noise_15", generator(2)), gaussian_noise(clean, 15, generator(2), quantize=False))


@pytest.mark.parametrize("kind", ["fog", "rain+fog", "noise_", "noise_x", "rain++haze", ""])
def test_unknown_degradation(kind):
    with pytest.raises(ValueError) as error:
        degrade(torch.rand(3, 8, 8), kind, generator())
    assert str(error.value) == (f"degrade: unknown degradation {kind!r}; available: noise, rain, haze, low_light, "
                                "blur, noise_<sigma> (e.g. noise_25), or several joined by '+' (e.g. rain+haze)")
