"""CPL: sparse prompt routing (CPLIR's checkpoints and outputs), its cost, and CPR training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import pyairir
from pyairir.nn import SparsePromptModule
from pyairir.nn.vgg import VGGFeatures
from pyairir.paradigms import CPL, PromptSelectionStatistics, load_vgg
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
    module = SparsePromptModule(4, prompt_len=6, prompt_size=5, lin_dim=8, top_k=2, renormalize=True).double()
    x = torch.randn(3, 8, 7, 7, dtype=torch.float64)
    out = module(x)
    weights, selection = module.last_probabilities.topk(2, dim=1)
    weights = weights / weights.sum(1, keepdim=True)
    prompt = sum(weights[:, j, None, None, None] * module.prompt_param[0][selection[:, j]] for j in range(2))
    expected = module.conv3x3(torch.nn.functional.interpolate(prompt, size=(7, 7), mode="bilinear",
                                                              align_corners=False))
    torch.testing.assert_close(out, expected)


class ElementsProduced(TorchDispatchMode):
    """Counts the elements every aten op writes (outputs that are views of an input are not
    written): the work of the elementwise products and sums that mix prompts, which
    FlopCounterMode does not count (it counts matrix products and convolutions only)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        self.total += sum(t.numel() for t in tree_leaves(out)
                          if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs)
        return out


BATCH = 2


def sparse_cost(prompt_len: int, fast: bool) -> tuple[int, int]:
    """(FLOPs, elements written) of one forward of a Sparse Prompt Module with n prompts of 64x16x16."""
    torch.manual_seed(0)
    module = SparsePromptModule(64, prompt_len=prompt_len, prompt_size=16, lin_dim=96, top_k=1, fast=fast)
    x = torch.rand(BATCH, 96, 32, 32)
    flops, elements = FlopCounterMode(display=False), ElementsProduced()
    with flops, torch.no_grad():
        module(x)
    with elements, torch.no_grad():
        module(x)
    return flops.get_total_flops(), elements.total


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
def test_cost_does_not_grow_with_the_number_of_prompts(fast):
    """From 5 to 15 prompts only the gate grows: its Linear(96 -> n) (2 * batch * 96 * 10 FLOPs)
    and the (B, n) logits and softmax it writes (2 * batch * 10 elements). A mix of every prompt
    (PromptIR's dense routing with zero weights) would write 2 x 10 more prompt components per
    image (the repeat and the product: 655,360 elements here)."""
    (flops5, written5), (flops15, written15) = sparse_cost(5, fast), sparse_cost(15, fast)
    assert flops15 - flops5 == 2 * BATCH * 96 * 10
    assert written15 - written5 == 2 * BATCH * 10


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


class Identity(torch.nn.Module):
    """phi = the image itself, as one feature map."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": image}


def test_cpr_is_the_papers_formula_on_a_hand_computed_case():
    """CPL Eq. 4-8 with phi the identity, m = 4 negatives, alpha = 0.01, on a model whose output
    is set by the prompt it uses: every gate selects prompt 0 and gives I+ = 0.5 everywhere; the
    clean image is 0.25; a negative forced onto prompt i gives 0.5 + d_i, d = (0.1, -0.3, 0.2, 0):
        L_pixel = |0.5 - 0.25|                          = 0.25
        L_pos   = (0.5 - 0.25)^2                        = 0.0625
        L_neg   = (0.1^2 + 0.3^2 + 0.2^2 + 0^2) / 4     = 0.035
        L_cpr   = L_pos - L_neg                         = 0.0275
        L       = L_pixel + alpha L_cpr                 = 0.250275"""
    model = CPL(backbone("promptir"), vgg=Identity(), negatives=4, alpha=0.01)
    with torch.no_grad():
        for module in model.prompt_modules():
            module.linear_layer.weight.zero_()
            module.linear_layer.bias.copy_(torch.tensor([10.0, 0, 0, 0, 0]))
    offsets = torch.tensor([0.0, 0.1, -0.3, 0.2, 0.0])
    network = model.forward

    def forward(degraded):
        network(degraded)  # the real forward records each gate's selection
        forced = model.prompt_modules()[0].forced
        value = torch.full((degraded.shape[0],), 0.5) if forced is None else 0.5 + offsets[forced[:, 0]]
        return value[:, None, None, None].expand_as(degraded).clone().requires_grad_()

    model.forward = forward
    degraded = torch.rand(2, 3, 16, 16)
    parts = model.training_loss(degraded, torch.full_like(degraded, 0.25))
    assert all((m.last_probabilities.argmax(1) == 0).all() for m in model.prompt_modules())
    assert parts["l1"].item() == pytest.approx(0.25, rel=1e-6)
    assert parts["cpr"].item() == pytest.approx(0.0275, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(0.250275, rel=1e-6)


@pytest.mark.parametrize("vgg", [None, "alpha 0"])
def test_without_cpr_the_loss_is_the_reconstruction_alone(vgg):
    """No feature extractor, or alpha = 0: L = L_pixel, and no negative pass runs (phi is never called)."""
    calls = []

    class Counting(Identity):
        def forward(self, image):
            calls.append(image.shape)
            return super().forward(image)

    model = CPL(backbone("promptir"), vgg=None if vgg is None else Counting(), alpha=0.0 if vgg else 0.01)
    degraded, clean = batch()
    parts = model.training_loss(degraded, clean)
    expected = (model(degraded) - clean).abs().mean()
    assert set(parts) == {"loss", "l1"} and not calls
    assert parts["loss"].item() == parts["l1"].item() == pytest.approx(expected.item(), rel=1e-6)
    with_cpr = CPL(backbone("promptir"), vgg=Counting(), alpha=1.0).training_loss(degraded, clean)
    assert set(with_cpr) == {"loss", "l1", "cpr"} and calls  # alpha 1 (any alpha but 0) adds CPR


def test_the_training_loss_draws_its_negatives_from_the_generator_given():
    """One negative among 4 unselected prompts: the CPR term depends on which; the same generator
    seed gives the same term, and across seeds the terms differ."""
    model = CPL(backbone("promptir"), vgg=VGGFeatures(random=True), negatives=1)
    degraded, clean = batch()
    with torch.no_grad():
        cpr = [model.training_loss(degraded, clean, torch.Generator().manual_seed(s))["cpr"].item()
               for s in (0, 0, 1, 2, 3)]
    assert cpr[0] == cpr[1] and len(set(cpr)) > 1, cpr


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
    assert all(forced.shape == (2, 1) for selection in negatives for forced in selection)  # one prompt each
    again = model.mismatched_selections(torch.Generator().manual_seed(0))  # drawn from the generator given
    assert all(torch.equal(a, b) for x, y in zip(negatives, again) for a, b in zip(x, y))
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


def test_selection_statistics_accumulate_per_module_and_task():
    """Two records of hand-set selections: sums, counts (integers) and means accumulate per
    (module, task); the entropy of a distribution with zeros counts only the non-zero entries."""
    model = CPL(backbone("promptir"))
    second = model.prompt_modules()[1]
    stats = PromptSelectionStatistics()
    records = [
        (torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0]]), torch.tensor([[0], [3]])),
        (torch.tensor([[0.25, 0.75, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]]), torch.tensor([[1], [3]])),
    ]
    for probabilities, selection in records:
        for module in model.prompt_modules():
            module.last_probabilities, module.last_selection = probabilities, selection
        second.last_probabilities = torch.full_like(probabilities, 0.2)  # another module, another distribution
        stats.record(model, ["rain", "haze"])
    torch.testing.assert_close(stats.mean_probabilities("rain"), torch.tensor([0.375, 0.625, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(stats.mean_probabilities("rain", module=1), torch.full((5,), 0.2))
    assert stats.histogram("rain").tolist() == [1, 1, 0, 0, 0] and stats.histogram("rain").dtype == torch.long
    assert stats.histogram("haze").tolist() == [0, 0, 0, 2, 0]
    p = [0.375, 0.625]
    assert stats.entropy("rain") == pytest.approx(-sum(x * math.log2(x) for x in p))
    assert stats.entropy("rain", module=1) == pytest.approx(math.log2(5))
    assert stats.entropy("haze") == pytest.approx(-sum(x * math.log2(x) for x in (0.15, 0.2, 0.25, 0.3, 0.1)))


def test_selection_statistics_errors():
    stats = PromptSelectionStatistics()
    with pytest.raises(ValueError, match=r"^PromptSelectionStatistics\.record: the model has no SparsePromptModule "
                                         r"\(wrap it in CPL\)$"):
        stats.record(backbone("restormer"), ["rain"])
    with pytest.raises(ValueError, match=r"^PromptSelectionStatistics\.record: run the model forward first$"):
        stats.record(CPL(backbone("promptir")), ["rain"])


def test_load_vgg_reads_torchvision_keys(tmp_path):
    source = VGGFeatures(random=True)
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in source.features.state_dict().items()}, path)
    loaded = load_vgg(path)
    assert all(torch.equal(loaded.features.state_dict()[k], v) for k, v in source.features.state_dict().items())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vgg(tmp_path / "missing.pth")


def test_construction_defaults_and_checks():
    """The defaults (the paper's 5 prompts, top-1, alpha 0.01, 4 negatives; CPLIR's unnormalised
    weights), the prompt stages built for a prompt-less backbone (half the channels, 128-pixel crop's size, a 1-head
    noise block, a bias-free reduction), PromptIR's own prompts reused, and the argument checks."""
    model = CPL(backbone("restormer"))  # dim 8: stages of 64, 32, 16 channels at 1/8, 1/4, 1/2
    assert (model.alpha, model.negatives, model.stages) == (0.01, 4, ("latent", "level3", "level2"))
    shapes = {name: tuple(m.prompt_param.shape) for name, m in model.named_children() if name.startswith("prompt")}
    assert shapes == {"prompt3": (1, 5, 32, 16, 16), "prompt2": (1, 5, 16, 32, 32), "prompt1": (1, 5, 8, 64, 64)}
    assert all((m.top_k, m.renormalize) == (1, False) for m in model.prompt_modules())
    assert model.prompt3.linear_layer.in_features == 64
    assert model.noise_level3.attn.num_heads == 1 and model.noise_level3.ffn.project_in.out_channels == 2 * int(
        96 * 2.66)
    assert model.reduce_noise_level3.bias is None and model.reduce_noise_level3.out_channels == 64
    assert "noise_level3.attn.qkv.bias" not in model.state_dict()  # bias-free, as CPLIR's noise blocks
    shallow = CPL(backbone("restormer"), stages=("level1",), renormalize=True)
    assert tuple(shallow.prompt1.prompt_param.shape) == (1, 5, 8, 128, 128)  # full resolution: 128 x 128
    assert [m.renormalize for m in shallow.prompt_modules()] == [True]
    promptir = backbone("promptir")
    old = promptir.prompt1.prompt_param
    reused = CPL(promptir, top_k=2, negatives=3, renormalize=True)
    assert reused.backbone.prompt1.prompt_param is old and reused.stages == ()
    assert all((m.top_k, m.renormalize) == (2, True) for m in reused.prompt_modules())
    for kwargs, message in [(dict(negatives=0), "CPL: negatives must be in [1, prompt_len - top_k = 4], got 0"),
                            (dict(negatives=5), "CPL: negatives must be in [1, prompt_len - top_k = 4], got 5"),
                            (dict(top_k=2, negatives=4),
                             "CPL: negatives must be in [1, prompt_len - top_k = 3], got 4")]:
        with pytest.raises(ValueError) as error:
            CPL(backbone("restormer"), **kwargs)
        assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        CPL(backbone("promptir"), prompt_len=6, negatives=1)
    assert str(error.value) == "CPL: prompt1 has 5 prompts, prompt_len is 6"
