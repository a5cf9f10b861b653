"""pyairir.accelerate on a model whose classes come from a user's own copy of the official code."""

from __future__ import annotations

import copy

import pytest
import torch

import pyairir
from tests import official_like
from tests.models.deterministic_weights import fill_deterministic


def user_net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = official_like.UserNet().double()
    with torch.no_grad():
        for p in model.parameters():  # move off the identity-like initialisation
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_swaps_the_official_blocks_and_keeps_the_output():
    model = user_net()
    x = torch.rand(2, 3, 13, 11, dtype=torch.float64)
    expected = model(x)
    parameters = {k: id(v) for k, v in model.named_parameters()}
    report = pyairir.accelerate(model)
    kinds = sorted(s.replacement for s in report.swapped)
    assert kinds.count("pyairir.nn.TransformerBlock") == 2  # blocks 0 and 1, whole
    assert kinds.count("pyairir.nn.LayerNorm") == 2 and kinds.count("pyairir.nn.MDTA") == 1  # block 2's parts
    assert kinds.count("pyairir.nn.GDFN") == 0  # not the DualGate_FeedForward
    assert kinds.count("pyairir.nn.NAFBlock") == 1
    assert type(model.blocks[2].ffn).__name__ == "DualGate_FeedForward"
    assert {k: id(v) for k, v in model.named_parameters()} == parameters  # the same Parameter objects
    out = model(x)
    torch.testing.assert_close(out, expected, atol=1e-9 * expected.abs().max().item(), rtol=1e-9)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_gradients_match():
    reference, fast = user_net(), user_net()
    pyairir.accelerate(fast)
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    reference(x).square().mean().backward()
    fast(x).square().mean().backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-9 * a.grad.abs().max().item(), rtol=1e-9, msg=name)


def test_mismatched_structure_is_skipped_with_a_reason():
    model = user_net()
    model.blocks[0].attn.qkv_dwconv = torch.nn.Conv2d(48, 48, 5, padding=2, groups=48, bias=False).double()
    report = pyairir.accelerate(model)
    assert any(name == "blocks.0.attn" and "qkv_dwconv" in reason and "3x3" in reason
               for name, reason in report.skipped)
    assert type(model.blocks[0].attn).__module__ == official_like.__name__
    assert "skipped blocks.0.attn" in str(report)


def test_accelerating_twice_changes_nothing():
    model = user_net()
    pyairir.accelerate(model)
    assert pyairir.accelerate(model).swapped == []


WHOLE = {  # official-structure models (tests/official_like.py) and what accelerate() swaps in them
    "restormer": (lambda: official_like.Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
                  {"TransformerBlock": 8}),
    "promptir": (lambda: official_like.PromptIR(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
                 {"TransformerBlock": 11, "PromptGenBlock": 3}),  # 8 + 3 noise blocks
    "sipl": (lambda: official_like.PromptIR_ProxyFusion(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
             # 6 cross blocks: their parts
             {"TransformerBlock": 11, "PromptGenBlock": 3, "LayerNorm": 18, "CrossAttention": 6}),
    "nafnet": (lambda: official_like.NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]),
               {"NAFBlock": 5}),
    "adair": (lambda: official_like.AdaIR(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
              {"TransformerBlock": 8, "Chanel_Cross_Attention": 9}),  # 3 per FreModule
}


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_whole_official_models(name):
    """accelerate() on whole models with the official structure: every recognisable block swapped
    (PromptIR's prompt blocks and SIPL's cross-attention too), same output and gradients (float64)."""
    build, expected_swaps = WHOLE[name]
    model = fill_deterministic(build().double())
    reference = copy.deepcopy(model)
    report = pyairir.accelerate(model)
    swapped = {}
    for swap in report.swapped:
        kind = swap.replacement.rsplit(".", 1)[1]
        swapped[kind] = swapped.get(kind, 0) + 1
    assert swapped == expected_swaps and not report.skipped
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    inputs = (x,)
    if name == "sipl":
        with torch.no_grad():
            inputs = (x, reference.privileged_features(torch.rand(1, 3, 32, 32, dtype=torch.float64)))
    expected, out = reference(*inputs), model(*inputs)
    torch.testing.assert_close(out, expected, atol=1e-9 * expected.abs().max().item(), rtol=1e-9)
    expected.square().mean().backward()
    out.square().mean().backward()
    for (key, a), (_, b) in zip(reference.named_parameters(), model.named_parameters()):
        if a.grad is None:  # PromptIR's unused convs
            assert b.grad is None, key
            continue
        torch.testing.assert_close(b.grad, a.grad, atol=1e-9 * max(a.grad.abs().max().item(), 1e-30), rtol=1e-9,
                                   msg=key)
