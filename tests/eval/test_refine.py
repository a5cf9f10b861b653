"""SIPL's self-refinement on any image size, whole or in tiles with a global dictionary."""

from __future__ import annotations

import pytest
import torch

import pyairir
from pyairir.eval import self_refine
from pyairir.paradigms import SIPL


def sipl(seed: int = 0) -> SIPL:
    torch.manual_seed(seed)
    model = SIPL(pyairir.create_model("restormer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
                 train_size=32).eval()
    with torch.no_grad():  # a non-zero dictionary, as a trained one is
        for name, p in model.named_parameters():
            if name.startswith("privileged_dictionary"):
                p.normal_()
    return model


def smooth_image(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (torch.stack([x, y, (x + y) / 2])[None] * 0.8 + 0.1)


def test_whole_image_is_sipl_restore_on_any_size():
    model, image = sipl(), smooth_image(37, 45)
    iterates = self_refine(model, image, iterations=2)
    assert len(iterates) == 3 and all(x.shape == image.shape for x in iterates)
    padded = torch.nn.functional.pad(image, (0, 3, 0, 3), mode="reflect")  # to multiples of 8
    expected = model.restore(padded, iterations=2)
    for got, want in zip(iterates, expected):
        torch.testing.assert_close(got, want[..., :37, :45])


def test_one_tile_equals_the_whole_image():
    model, image = sipl(), smooth_image(48, 40)
    whole = self_refine(model, image, iterations=2)
    tiled = self_refine(model, image, iterations=2, tile=64)
    for a, b in zip(whole, tiled):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tiles_share_one_global_dictionary():
    """The dictionaries are fused once per refinement from the whole previous iterate (not per
    tile), and every tile's decoder attends to exactly those fused dictionaries."""
    model, image = sipl(), smooth_image(96, 80)
    fusions, proxies = [], {k: [] for k in model.index.values()}
    handles = [getattr(model, f"p{k}_cross").register_forward_hook(lambda m, a, out: fusions.append(a[1].shape))
               for k in model.index.values()]
    handles += [getattr(model, f"cross_p{k}").register_forward_hook(lambda m, a, out, k=k: proxies[k].append(a[1]))
                for k in model.index.values()]
    tiled = self_refine(model, image, iterations=1, tile=48, overlap=16)
    for handle in handles:
        handle.remove()
    assert len(fusions) == len(model.stages)  # once per stage for the one refinement, not per tile
    # the whole image's features at each fused level (latent, level3, level2), not a 48x48 tile's
    assert {tuple(shape[-2:]) for shape in fusions} == {(12, 10), (24, 20), (48, 40)}
    expected = model.fused_dictionaries(tiled[0])  # 96 x 80 needs no padding
    tiles = 3 * 2  # rows (starts 0, 32, 48) and columns (0, 32) of 48-pixel tiles over 96 x 80
    for stage, k in model.index.items():
        first_pass, refinement = proxies[k][:tiles], proxies[k][tiles:]
        assert len(refinement) == tiles
        assert all(torch.equal(p, expected[stage]) for p in refinement)
        assert not torch.equal(first_pass[0], expected[stage])  # the unguided pass uses PD alone
    assert not torch.equal(tiled[1], tiled[0])


def test_bad_arguments():
    model, image = sipl(), smooth_image(16, 16)
    with pytest.raises(ValueError, match="tiles take the paper loop only"):
        self_refine(model, image, iterations=1, tile=8, loop="official")
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        self_refine(model, image, iterations=-1)
