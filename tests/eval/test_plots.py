"""The figures are written as PNG files."""

from __future__ import annotations

import torch

from pyairir.eval import plots


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure(tmp_path):
    results = {"derain": {"psnr": 30.1, "ssim": 0.9, "count": 2}, "dehaze": {"psnr": 25.0, "ssim": 0.8, "count": 2}}
    assert is_png(plots.psnr_per_task(results, tmp_path / "a" / "tasks.png"))
    assert is_png(plots.psnr_per_iteration([30.0, 30.5, 30.6], tmp_path / "iterations.png"))
    probabilities = {"rain": torch.tensor([0.7, 0.1, 0.1, 0.05, 0.05]), "haze": torch.tensor([0.2] * 5)}
    assert is_png(plots.prompt_selection(probabilities, {"rain": 1.4, "haze": 2.32}, tmp_path / "prompts.png"))
    ratios = [{"claim": "x vs y", "ratio": 3.0, "target": 2.5}, {"claim": "z", "ratio": 1.2, "target": None}]
    assert is_png(plots.benchmark_ratios(ratios, tmp_path / "ratios.png"))
