"""Tiled inference: exact for a model that only looks overlap/4 (blended) or overlap/2 (hard seams)
pixels around, bounded otherwise, and without visible seams when blended."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyairir
from pyairir.eval import psnr, restore, tiled_restore


class ConvNet(nn.Module):
    """Three 3x3 convs: receptive radius 3."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


@pytest.mark.parametrize("shape, tile, overlap, blend", [((1, 3, 67, 45), 24, 8, False), ((2, 3, 50, 50), 32, 10, False),
                                                         ((3, 20, 90), 32, 6, False), ((1, 3, 67, 45), 24, 12, True),
                                                         ((2, 3, 50, 50), 32, 14, True), ((3, 20, 90), 32, 13, True)])
def test_equals_untiled_for_a_local_model(shape, tile, overlap, blend):
    """ConvNet looks 3 pixels around: within overlap/2 (hard seams) and overlap/4 (blended)."""
    torch.manual_seed(0)
    model = ConvNet().double()
    image = torch.rand(shape, dtype=torch.float64)
    torch.testing.assert_close(tiled_restore(model, image, tile, overlap, blend=blend), restore(model, image),
                               atol=1e-12, rtol=1e-12)


class TileMean(nn.Module):
    """Every pixel becomes the mean colour of the whole tile: the most global model there is."""

    size_multiple = 1

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


def test_blending_leaves_no_seam():
    """Hard seams jump by the difference of the tiles' means; blending spreads that jump over
    overlap/2 pixels, so no step between neighbouring pixels exceeds jump / (overlap/2)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 70), torch.linspace(0, 1, 90), indexing="ij")
    image = torch.stack([x, y, x * y])[None].double()
    overlap = 16

    def largest_step(out):
        return max(out.diff(dim=2).abs().max().item(), out.diff(dim=3).abs().max().item())

    jump = largest_step(tiled_restore(TileMean(), image, tile=32, overlap=overlap, blend=False))
    blended = tiled_restore(TileMean(), image, tile=32, overlap=overlap)
    assert jump > 0.05
    assert largest_step(blended) <= jump / (overlap // 2) + 1e-12
    # the weights sum to one: a constant image stays exactly constant
    constant = torch.full((1, 3, 70, 90), 0.3, dtype=torch.float64)
    torch.testing.assert_close(tiled_restore(TileMean(), constant, 32, overlap), constant, atol=1e-15, rtol=0)


def test_attention_model_stays_within_the_stated_bound():
    """Restormer sees each tile alone (its channel attention is global per tile): on a smooth test
    image with a tiny random model, tiled and untiled agree to better than 30 dB PSNR."""
    torch.manual_seed(0)
    model = pyairir.create_model("restormer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1).eval()
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 80), indexing="ij")
    image = torch.stack([x, y, (x + y) / 2])[None] * 0.8 + 0.1
    untiled = restore(model, image)
    tiled = tiled_restore(model, image, tile=48, overlap=16)
    assert psnr(tiled, untiled).item() > 30


def test_progress_bar_counts_the_tiles(capsys):
    image = torch.rand(1, 3, 40, 50)
    model = ConvNet()
    quiet = tiled_restore(model, image, tile=24, overlap=8)
    assert "tiles" not in capsys.readouterr().err
    shown = tiled_restore(model, image, tile=24, overlap=8, progress=True)
    err = capsys.readouterr().err
    assert "tiles" in err and "0/6" in err  # 2 rows x 3 columns of tiles
    torch.testing.assert_close(shown, quiet, rtol=0, atol=0)


def test_bad_tiles():
    with pytest.raises(ValueError, match="need tile > 0 and 0 <= overlap < tile"):
        tiled_restore(ConvNet(), torch.rand(1, 3, 8, 8), tile=16, overlap=16)
