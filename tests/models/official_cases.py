"""The tiny configurations whose official float64 outputs are stored in
tests/models/data/official_outputs.safetensors: name -> (pyairir class name, constructor arguments
(the official class takes the same), input shape). Inputs are torch.rand(shape, float64) from a
generator seeded with 1; both models are filled by tests/models/deterministic_weights.py.
scripts/official_fixtures.py computes the outputs with the official code."""

from __future__ import annotations

from typing import Any

TINY_RESTORMER = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
TINY_NAFNET = dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])

CASES: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "restormer_tiny": ("Restormer", TINY_RESTORMER, (1, 3, 32, 32)),
    "restormer_biasfree_tiny": ("Restormer", {**TINY_RESTORMER, "LayerNorm_type": "BiasFree"}, (1, 3, 24, 40)),
    "restormer_dual_pixel_tiny": ("Restormer", {**TINY_RESTORMER, "inp_channels": 6, "dual_pixel_task": True},
                                  (1, 6, 16, 16)),
    # PromptIR's official channel counts only work at dim=48: the shallowest official model.
    "promptir_shallow": ("PromptIR", dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, decoder=True),
                         (2, 3, 32, 32)),
    "nafnet_tiny": ("NAFNet", TINY_NAFNET, (1, 3, 19, 27)),
    "nafnetlocal_tiny": ("NAFNetLocal", {**TINY_NAFNET, "train_size": (1, 3, 16, 16)}, (1, 3, 40, 36)),
    "adair_tiny": ("AdaIR", {**TINY_RESTORMER, "decoder": True}, (2, 3, 32, 40)),
}
INPUT_SEED = 1
# pyairir's own configurations, with no official counterpart.
NOT_OFFICIAL = {"nafnet_demo": "pyairir's demo model (scripts/train_demo.py)"}
