"""evaluate(): per-task metrics, and tiles that follow the requested overlap."""

from __future__ import annotations

import pytest
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


def test_bad_images_are_found_before_the_first_restoration(tmp_path):
    """An 8x8 test image, a degraded image whose size differs from its ground truth's, and an
    unreadable one: all listed at once, before any image is restored (issue 13, item 14)."""
    from PIL import Image

    from pyairir.data import ImageError, evaluation_sets
    from tests.data.tree import make_test_tree

    test = make_test_tree(tmp_path)
    Image.new("RGB", (8, 8)).save(test / "denoise" / "bsd68" / "tiny.png")
    Image.new("RGB", (50, 34)).save(test / "derain" / "Rain100L" / "input" / "1.png")
    (test / "deblur" / "gopro" / "target" / "0.png").write_bytes(b"not a png")
    calls = []
    model = ConvNet()
    model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ImageError) as error:
        evaluate(model, evaluation_sets(test, "5task"), progress=False)
    message = str(error.value)
    assert message.startswith("3 problem(s) with the")
    assert "tiny.png' is 8x8, smaller than 16 pixels (the test crop multiple)" in message
    assert "input/1.png' is 50x34 but its ground truth" in message and "target/1.png' is 50x35" in message
    assert "target/0.png' could not be read" in message
    assert calls == []


def test_an_image_failing_mid_run_is_listed_and_the_rest_kept(tmp_path):
    from pyairir.data import RestorationDataset, evaluation_sets
    from tests.data.tree import make_test_tree

    test = make_test_tree(tmp_path)
    sets = {"derain": evaluation_sets(test, "5task")["derain"]}
    original = RestorationDataset.__getitem__

    def second_fails(self, item):
        if item == 1:
            raise ValueError("derain: the file changed since it was checked")
        return original(self, item)

    model = ConvNet()
    RestorationDataset.__getitem__ = second_fails
    try:
        result = evaluate(model, sets, progress=False)
    finally:
        RestorationDataset.__getitem__ = original
    assert result["derain"]["count"] == 1
    assert result["derain"]["failed"] == ["derain: the file changed since it was checked"]
    whole = evaluate(model, {"derain": [sets["derain"][0]]}, progress=False)
    assert result["derain"]["psnr"] == whole["derain"]["psnr"]
