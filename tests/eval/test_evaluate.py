"""evaluate(): per-task metrics, and tiles that follow the requested overlap."""

from __future__ import annotations

import torch

from pyairir.eval import evaluate, restore
from tests.eval.test_tiled import ConvNet


def test_tiles_follow_the_overlap():
    """ConvNet looks 3 pixels around: tiles blended over an overlap of 12 give the untiled
    metrics; with an overlap of 2 the seams show. The clean images are the untiled restorations
    plus a little noise, so that PSNR sees the seams."""
    torch.manual_seed(0)
    model = ConvNet()
    generator = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(2):
        degraded = torch.rand(3, 40, 44, generator=generator)
        clean = restore(model, degraded) + 0.01 * torch.randn(3, 40, 44, generator=generator)
        samples.append({"clean": clean.clamp(0, 1), "degraded": degraded})
    whole = evaluate(model, {"noise": samples}, progress=False)["noise"]
    tiled = evaluate(model, {"noise": samples}, tile=16, overlap=12, progress=False)["noise"]
    seams = evaluate(model, {"noise": samples}, tile=16, overlap=2, progress=False)["noise"]
    assert whole["count"] == tiled["count"] == 2
    assert abs(tiled["psnr"] - whole["psnr"]) < 1e-4 and abs(tiled["ssim"] - whole["ssim"]) < 1e-6
    assert seams["psnr"] < whole["psnr"] - 0.2  # 0.46 dB lower here
