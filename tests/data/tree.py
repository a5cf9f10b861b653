"""Tiny dataset folder trees in the official layouts, for the reader tests."""

from __future__ import annotations

from pathlib import Path

import torch

from pyairir.data import write_image
from pyairir.data.datasets import CDD11_DEGRADATIONS


def image(seed: int, h: int = 40, w: int = 36) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def make_training_tree(root: Path) -> Path:
    train = root / "Train"
    for i in range(2):
        write_image(train / "Denoise" / f"{i:05d}.png", image(i))
        write_image(train / "Derain" / "rainy" / f"rain-{i + 1}.png", image(10 + i))
        write_image(train / "Derain" / "gt" / f"norain-{i + 1}.png", image(20 + i))
        write_image(train / "Dehaze" / "synthetic" / "part1" / f"{i + 25:04d}_0.8_0.1.jpg", image(30 + i))
        write_image(train / "Dehaze" / "original" / f"{i + 25:04d}.jpg", image(40 + i))
        write_image(train / "Deblur" / "blur" / f"GOPR_{i}.png", image(50 + i))
        write_image(train / "Deblur" / "sharp" / f"GOPR_{i}.png", image(60 + i))
        write_image(train / "Enhance" / "low" / f"{i}.png", image(70 + i))
        write_image(train / "Enhance" / "gt" / f"{i}.png", image(80 + i))
    return train


def make_test_tree(root: Path) -> Path:
    test = root / "test"
    for i in range(2):
        write_image(test / "denoise" / "bsd68" / f"{i}.png", image(100 + i, 35, 50))
        for task, folder in (("derain", "Rain100L"), ("deblur", "gopro"), ("enhance", "lol")):
            write_image(test / task / folder / "input" / f"{i}.png", image(110 + i, 35, 50))
            write_image(test / task / folder / "target" / f"{i}.png", image(120 + i, 35, 50))
        write_image(test / "dehaze" / "input" / f"{i + 1:04d}_0.8_0.2.jpg", image(130 + i, 35, 50))
        write_image(test / "dehaze" / "target" / f"{i + 1:04d}.png", image(140 + i, 35, 50))
    return test


def make_cdd11_tree(root: Path) -> Path:
    base = root / "CDD-11_test"
    for i in range(2):
        write_image(base / "clear" / f"{i:03d}.png", image(200 + i))
        for k, kind in enumerate(CDD11_DEGRADATIONS):
            write_image(base / kind / f"{i:03d}.png", image(300 + 10 * k + i))
    return base
