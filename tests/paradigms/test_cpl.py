"""CPL: sparse prompt routing (CPLIR's checkpoints and outputs), its cost, and CPR training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

import pyairir
from pyairir.nn import SparsePromptModule
from pyairir.nn.vgg import VGGFeatures
from pyairir.paradigms import CPL, PromptSelectionStatistics
from tests.models.deterministic_weights import fill_deterministic
from tests.paradigms.common import BACKBONES, backbone, batch, train

DATA = Path(__file__).parent / "data"
SHALLOW = dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)


def test_state_dict_is_cplir_sparse_promptir():
    with torch.device("meta"):
        model = CPL(pyairir.create_model("promptir"))
    manifest = dict(json.loads((DATA / "official_state_dicts.json").read_text())["cplir_promptir"])
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == manifest
    assert sum(p.numel() for p in model.parameters()) == 35_376_967


def test_unrenormalised_routing_reproduces_cplir():
    expected = load_file(DATA / "official_outputs.safetensors")
    model = fill_deterministic(CPL(pyairir.create_model("promptir", **SHALLOW), renormalize=False).double()).eval()
    with torch.no_grad():
        out = model(expected["input"])
    torch.testing.assert_close(out, expected["cplir"], atol=1e-12 * expected["cplir"].abs().max().item(), rtol=1e-12)


def test_renormalised_top_k_weights_sum_to_one():
    torch.manual_seed(0)
    module = SparsePromptModule(4, prompt_len=6, prompt_size=5, lin_dim=8, top_k=2).double()
    x = torch.randn(3, 8, 7, 7, dtype=torch.float64)
    out = module(x)
    weights, selection = module.last_probabilities.topk(2, dim=1)
    weights = weights / weights.sum(1, keepdim=True)
    prompt = sum(weights[:, j, None, None, None] * module.prompt_param[0][selection[:, j]] for j in range(2))
    expected = module.conv3x3(torch.nn.functional.interpolate(prompt, size=(7, 7), mode="bilinear",
                                                              align_corners=False))
    torch.testing.assert_close(out, expected)


def sparse_flops(prompt_len: int) -> int:
    torch.manual_seed(0)
    module = SparsePromptModule(64, prompt_len=prompt_len, prompt_size=16, lin_dim=96, top_k=1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.rand(2, 96, 32, 32))
    return counter.get_total_flops()


def test_cost_does_not_grow_with_the_number_of_prompts():
    """From 5 to 15 prompts only the gate's Linear(96 -> n) grows (2 * batch * 96 * 10 FLOPs);
    the prompts themselves cost the same, as only the selected one is used."""
    assert sparse_flops(15) - sparse_flops(5) == 2 * 2 * 96 * 10


def test_only_selected_prompts_receive_gradient():
    torch.manual_seed(0)
    module = SparsePromptModule(4, prompt_len=5, prompt_size=6, lin_dim=8, top_k=1)
    module(torch.randn(2, 8, 6, 6)).sum().backward()
    selected = set(module.last_selection.flatten().tolist())
    for i in range(5):
        has_gradient = module.prompt_param.grad[0, i].abs().sum().item() > 0
        assert has_gradient == (i in selected), (i, selected)


@pytest.mark.parametrize("name", BACKBONES)
def test_trains_with_cpr_on_every_backbone(name):
    model = CPL(backbone(name), vgg=VGGFeatures(random=True), negatives=4)
    losses = train(model)
    assert losses[-1] < losses[0], losses
    parts = model.training_loss(*batch())
    assert set(parts) == {"loss", "l1", "cpr"}


def test_negatives_use_mismatched_prompts():
    model = CPL(backbone("promptir"), vgg=VGGFeatures(random=True))
    degraded, _ = batch()
    model(degraded)
    chosen = [m.last_selection.clone() for m in model.prompt_modules()]
    negatives = model.mismatched_selections(torch.Generator().manual_seed(0))
    assert len(negatives) == 4
    for selection in negatives:
        for own, forced in zip(chosen, selection):
            assert not (own == forced).any()
    per_sample = torch.cat([n[0] for n in negatives], dim=1)  # the first module's 4 negatives
    assert all(len(set(row.tolist())) == 4 for row in per_sample)
    with model.forced_prompts(negatives[0]):
        model(degraded)
    assert all(torch.equal(m.last_selection, s) for m, s in zip(model.prompt_modules(), negatives[0]))


def test_cpr_needs_enough_prompts():
    with pytest.raises(ValueError, match=r"negatives must be in \[1, prompt_len - top_k = 4\]"):
        CPL(backbone("restormer"), negatives=5)


def test_vgg_refuses_to_start_without_weights():
    with pytest.raises(ValueError, match="pyairir downloads nothing"):
        VGGFeatures()


def test_selection_statistics():
    model = CPL(backbone("promptir"))
    stats = PromptSelectionStatistics()
    degraded, _ = batch()
    with torch.no_grad():
        model(degraded)
    stats.record(model, ["rain", "haze"])
    module = model.prompt_modules()[0]
    torch.testing.assert_close(stats.mean_probabilities("rain"), module.last_probabilities[0].float())
    assert stats.histogram("haze").sum().item() == 1 and stats.histogram("haze")[module.last_selection[1, 0]] == 1
    p = module.last_probabilities[0].double()
    assert stats.entropy("rain") == pytest.approx(float(-(p * p.log2()).sum()), rel=1e-5)
    assert stats.tasks() == ["haze", "rain"]
    with pytest.raises(ValueError, match="1 task labels for a batch of 2"):
        stats.record(model, ["rain"])
