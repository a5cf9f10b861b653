"""LUPI: two-stage training, the frozen teacher, inference from the student alone."""

from __future__ import annotations

import pytest
import torch

import pyairir
from pyairir.models.complexity import count
from pyairir.paradigms import LUPI
from tests.paradigms.common import BACKBONES, backbone, batch, train


def lupi(name: str) -> LUPI:
    return LUPI(backbone(name), prior_dim=32, estimator_width=8)


@pytest.mark.parametrize("name", BACKBONES)
def test_both_stages_train_on_every_backbone(name):
    model = lupi(name)
    stage1 = train(model)
    assert stage1[-1] < stage1[0], stage1
    model.begin_stage2()
    stage2 = train(model)
    assert stage2[-1] < stage2[0], stage2


def test_stage2_leaves_the_teacher_bit_identical():
    model = lupi("restormer")
    train(model, steps=2)
    model.begin_stage2()
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    train(model, steps=3)  # the optimiser is given every parameter that requires grad
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # even all of them
    optimizer.zero_grad()
    model.training_loss(*batch())["loss"].backward()
    optimizer.step()
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in teacher.items())
    assert not model.teacher.training and model.stage == 2


def test_stage2_loss_has_the_alignment_term():
    model = lupi("promptir")
    model.begin_stage2()
    losses = model.training_loss(*batch())
    assert set(losses) == {"loss", "l1", "kl"}
    assert losses["loss"].item() == pytest.approx((losses["l1"] + model.align_weight * losses["kl"]).item(), rel=1e-5)


def test_alignment_is_zero_for_equal_priors_and_positive_otherwise():
    model = lupi("restormer")
    prior = torch.randn(2, 32)
    assert model.alignment(prior, prior).item() == pytest.approx(0.0, abs=1e-6)
    assert model.alignment(prior, torch.randn(2, 32)).item() > 0


def test_inference_needs_no_ground_truth_and_blocks_start_as_identity():
    model = lupi("nafnet_sidd_w32").eval()
    degraded, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(degraded), model.backbone(degraded))  # DB convs start at zero


def test_stage_is_saved_with_the_model():
    model = lupi("restormer")
    model.begin_stage2()
    restored = lupi("restormer")
    restored.load_state_dict(model.state_dict())
    assert restored.stage == 2


def test_parameter_count_of_the_papers_configuration():
    """LUPI Table 5: 31.93 M for the deployed model (Restormer U-Net, prior 512). Ours, counting
    the student predictor, the three Degradation-aware Blocks and the backbone (not the
    teacher, which inference discards), is within 10 %."""
    with torch.device("meta"):
        model = LUPI(pyairir.create_model("restormer"))
    deployed = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("teacher."))
    assert abs(deployed / 1e6 - 31.93) / 31.93 < 0.10, deployed / 1e6
    params, macs = count(model)
    assert macs > 0
