"""The backbones are the official architectures: same keys and shapes, same counts, same outputs.

data/official_state_dicts.json lists, per registered configuration, the
state_dict keys and shapes of the official class (Restormer @df766d5,
PromptIR @106159a, NAFNet @2b4af71) in order. data/official_outputs.safetensors
holds, per tiny configuration below, an input and the official class's output
in float64, both classes filled by tests/models/deterministic_weights.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pyairir
from pyairir.models import NAFNet, NAFNetLocal, PromptIR, Restormer
from pyairir.models.complexity import count_registered
from tests.models.deterministic_weights import fill_deterministic

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "official_state_dicts.json").read_text())

# The configurations the official outputs were computed for.
TINY = {
    "restormer_tiny": (Restormer, dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
    "restormer_biasfree_tiny": (Restormer, dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                                                LayerNorm_type="BiasFree")),
    "restormer_dual_pixel_tiny": (Restormer, dict(inp_channels=6, dim=8, num_blocks=[1, 1, 1, 1],
                                                  num_refinement_blocks=1, dual_pixel_task=True)),
    # PromptIR's official channel counts only work at dim=48: the shallowest official model.
    "promptir_shallow": (PromptIR, dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, decoder=True)),
    "nafnet_tiny": (NAFNet, dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])),
    "nafnetlocal_tiny": (NAFNetLocal, dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1],
                                           train_size=(1, 3, 16, 16))),
}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_state_dict_keys_and_shapes_are_official(name):
    with torch.device("meta"):
        model = pyairir.create_model(name)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == MANIFEST[name]


# Exact parameter counts of the official classes (../shared/official-code-notes.md, section 0) and
# the rounded params/MACs of LUPI Table 5 at 3x256x256.
@pytest.mark.parametrize("name, params, table_params_m, table_gmacs", [
    ("restormer", 26_126_644, 26.13, 154.88),
    ("promptir", 35_592_263, 35.59, 172.71),
    ("nafnet_sidd_w32", 29_159_715, None, None),
    ("nafnet_sidd_w64", 115_982_915, None, None),
    ("nafnet_gopro_w32", 17_111_907, None, None),
    ("nafnet_gopro_w64", 67_888_835, None, None),
])
def test_counts(name, params, table_params_m, table_gmacs):
    counted_params, macs = count_registered(name, 256)
    assert counted_params == params
    if table_params_m is not None:
        assert round(counted_params / 1e6, 2) == table_params_m
        assert round(macs / 1e9, 2) == table_gmacs


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_equals_official(name):
    cls, arguments = TINY[name]
    expected = load_file(DATA / "official_outputs.safetensors")
    model = fill_deterministic(cls(**arguments).double()).eval()
    with torch.no_grad():
        out = model(expected[f"{name}.input"])
    reference = expected[f"{name}.output"]
    torch.testing.assert_close(out, reference, atol=1e-12 * reference.abs().max().item(), rtol=1e-12)
