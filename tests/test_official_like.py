"""tests/official_like.py, the official structure the benchmarks time pyairir against, is the
official code's: its whole models have the official state_dict keys, in order, and give the
official outputs (the fixtures of tests/models/data) in float64."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests import official_like
from tests.models.deterministic_weights import fill_deterministic
from tests.models.test_official_compatibility import DATA, MANIFEST
from tests.paradigms.test_sipl import DATA as SIPL_DATA
from tests.paradigms.test_sipl import MANIFEST as SIPL_MANIFEST
from tests.paradigms.test_sipl import SHALLOW

FULL = {
    "restormer": (official_like.Restormer, {}),
    "restormer_biasfree": (official_like.Restormer, dict(LayerNorm_type="BiasFree")),
    "promptir": (official_like.PromptIR, {}),
    "nafnet_sidd_w32": (official_like.NAFNet, dict(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8],
                                                   dec_blk_nums=[2, 2, 2, 2])),
    "nafnet_sidd_w64": (official_like.NAFNet, dict(width=64, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8],
                                                   dec_blk_nums=[2, 2, 2, 2])),
    "nafnet_gopro_w32": (official_like.NAFNet, dict(width=32, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28],
                                                    dec_blk_nums=[1, 1, 1, 1])),
    "nafnet_gopro_w64": (official_like.NAFNet, dict(width=64, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28],
                                                    dec_blk_nums=[1, 1, 1, 1])),
    "adair": (official_like.AdaIR, {}),
}
TINY = {
    "restormer_tiny": (official_like.Restormer, dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
    "restormer_biasfree_tiny": (official_like.Restormer, dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                                                              LayerNorm_type="BiasFree")),
    "restormer_dual_pixel_tiny": (official_like.Restormer, dict(inp_channels=6, dim=8, num_blocks=[1, 1, 1, 1],
                                                                num_refinement_blocks=1, dual_pixel_task=True)),
    "promptir_shallow": (official_like.PromptIR, dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
    "nafnet_tiny": (official_like.NAFNet, dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])),
    "adair_tiny": (official_like.AdaIR, dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_state_dict_is_the_official_one(name):
    assert sorted(FULL) == sorted(MANIFEST)
    cls, arguments = FULL[name]
    with torch.device("meta"):
        model = cls(**arguments)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == MANIFEST[name]


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_is_the_official_one(name):
    cls, arguments = TINY[name]
    expected = load_file(DATA / "official_outputs.safetensors")
    model = fill_deterministic(cls(**arguments).double()).eval()
    with torch.no_grad():
        out = model(expected[f"{name}.input"])
    reference = expected[f"{name}.output"]
    torch.testing.assert_close(out, reference, atol=1e-12 * reference.abs().max().item(), rtol=1e-12)


def test_sipl_state_dict_is_the_official_one():
    with torch.device("meta"):
        model = official_like.PromptIR_ProxyFusion()
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == SIPL_MANIFEST["sipl_promptir"]


@pytest.mark.parametrize("guided", [False, True], ids=["unguided", "guided"])
def test_sipl_output_is_the_official_one(guided):
    expected = load_file(SIPL_DATA / "official_outputs.safetensors")
    model = fill_deterministic(official_like.PromptIR_ProxyFusion(**SHALLOW).double()).eval()
    with torch.no_grad():
        privileged = model.privileged_features(expected["privileged_image"]) if guided else None
        out = model(expected["input"], privileged)
    reference = expected["sipl_guided" if guided else "sipl_unguided"]
    torch.testing.assert_close(out, reference, atol=1e-12 * reference.abs().max().item(), rtol=1e-12)
