"""The memory estimate made before a restoration, and the tile chosen when an image does not fit
(issue 13, item 11)."""

from __future__ import annotations

import pytest
import torch

import pyairir.eval.memory as memory
from pyairir.data import read_image
from pyairir.eval import tiled_restore
from pyairir.eval.memory import peak_activation_bytes, plan_tile


def test_the_estimate_counts_the_tensors_alive_at_once():
    """conv (8 channels) -> ReLU -> conv (3): the conv's and the ReLU's outputs are alive together
    (16 channels of float32), then the ReLU's and the last conv's (11): the peak is 64 bytes a pixel."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    assert peak_activation_bytes(net, 20, 30) == 64 * 20 * 30
    net[1].inplace = True  # the ReLU writes into the conv's output: 8 + 3 channels at the peak
    assert peak_activation_bytes(net, 20, 30) == 44 * 20 * 30


def test_a_plan_tiles_only_what_does_not_fit(monkeypatch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    assert plan_tile(net, 100, 100, 8, 4) == (None, 0)  # below memory.SMALL pixels: no estimate
    monkeypatch.setattr(memory, "SMALL", 0)
    needed = int(memory.SAFETY * 64 * 100 * 100)
    assert plan_tile(net, 100, 100, 8, 4, available=needed) == (None, needed)
    tile, _ = plan_tile(net, 100, 100, 8, 4, available=needed // 4)
    # half of a quarter: tiles of about 100 / sqrt(8) = 35 pixels, less the overlap, in multiples of 8
    assert tile == 24
    assert memory.SAFETY * 64 * (tile + 8) ** 2 <= needed // 8


def test_restore_tiles_an_image_too_large_for_the_memory_and_says_so(tmp_path, monkeypatch, capsys):
    from pyairir.cli import main
    from pyairir.demo import load_demo_model
    from pyairir.models.checks import size_multiple
    from tests.test_cli import photo

    source = photo(tmp_path / "in.png", 70, 90)
    monkeypatch.setattr(memory, "SMALL", 0)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2_000_000)
    assert main(["restore", str(source), "-o", str(tmp_path / "out.png"), "--overlap", "8"]) == 0
    err = capsys.readouterr().err
    model = load_demo_model()
    tile, needed = plan_tile(model, 70, 90, size_multiple(model), 8, available=2_000_000)
    assert tile is not None and needed > 2_000_000
    assert f"in.png: untiled it needs about {needed / 2 ** 20:.0f} MiB, more than the 2 MiB available: " \
           f"restoring in tiles of {tile} (--tile chooses another size)" in err
    expected = tiled_restore(model, read_image(source)[None], tile, 8)[0]
    written = read_image(tmp_path / "out.png")
    assert (written - expected.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
