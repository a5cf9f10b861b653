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


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
def test_stage2_with_a_new_student_restorer(fast):
    """begin_stage2(restorer) trains a fresh R_S (the paper's "new student restorer") with fresh
    Degradation-aware Blocks; the teacher and the student predictor are kept."""
    model = pyairir.nn.set_fast(lupi("restormer"), fast)
    train(model, steps=2)
    kept = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("teacher.", "student."))}
    fresh = backbone("restormer", seed=5)
    expected = {k: v.clone() for k, v in fresh.state_dict().items()}
    model.begin_stage2(fresh)
    state = model.state_dict()
    assert model.backbone is fresh and model.stage == 2 and not model.teacher.training
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert all(torch.equal(state[k], v) for k, v in kept.items())
    assert set(model.degradation_blocks) == set(model.stages)
    assert all(block.conv.weight.abs().sum() == 0 for block in model.degradation_blocks.values())
    assert all(m.fast is fast for m in model.modules() if hasattr(m, "fast"))
    stage2 = train(model)
    assert stage2[-1] < stage2[0], stage2
    double = lupi("restormer").double()
    double.begin_stage2(backbone("restormer"))
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    with pytest.raises(ValueError, match="restorer has decoder stages"):
        lupi("restormer").begin_stage2(pyairir.create_model("restormer", dim=16, num_blocks=[1, 1, 1, 1],
                                                            num_refinement_blocks=1))


def test_stage2_loss_has_the_alignment_term():
    model = lupi("promptir")
    model.begin_stage2()
    losses = model.training_loss(*batch())
    assert set(losses) == {"loss", "l1", "kl"}
    assert losses["loss"].item() == pytest.approx((losses["l1"] + model.align_weight * losses["kl"]).item(), rel=1e-5)


def test_alignment_is_the_batch_mean_kl_of_the_softmaxes():
    """KL(softmax(d_T) || softmax(d_S)) summed over the prior, averaged over the batch, by hand;
    the default weight is the paper's 1."""
    model = lupi("restormer")
    student, teacher = torch.randn(3, 32, dtype=torch.float64), torch.randn(3, 32, dtype=torch.float64)
    p, q = teacher.softmax(1), student.softmax(1)
    expected = (p * (p.log() - q.log())).sum(1).mean()
    assert model.alignment(student, teacher).item() == pytest.approx(expected.item(), rel=1e-12)
    assert LUPI(backbone("restormer")).align_weight == 1.0


def test_construction():
    model = LUPI(backbone("restormer"), prior_dim=16, estimator_width=4)
    assert model.stage == 1
    assert model.teacher.encoder[0].out_channels == 4 and model.student.encoder[0].out_channels == 4
    with pytest.raises(ValueError) as error:
        LUPI(backbone("restormer"), stages=("latent", "nowhere"))
    assert str(error.value) == ("LUPI: ['nowhere'] are not decoder stages of Restormer (['latent', 'level3', "
                                "'level2', 'level1'])")


def test_stage1_loss_and_train_mode():
    model = lupi("restormer")
    losses = model.training_loss(*batch())
    assert set(losses) == {"loss", "l1"} and losses["l1"].item() == losses["loss"].item()
    model.eval()
    assert model.train() is model and model.training
    model.begin_stage2()
    assert not any(p.requires_grad for p in model.teacher.parameters())  # the teacher is frozen


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


def test_counts_of_the_papers_configuration():
    """LUPI Table 5, at 3x256x256: 31.93 M parameters and 163.20 G for the deployed model. Ours
    (the student predictor, three Degradation-aware Blocks and the Restormer backbone; not the
    teacher, which inference discards) has 31,422,868 parameters and 160.80 GMAC: Restormer's
    154.88 G, the three blocks' 3x3 convs 4.08 G, the student's four convs 1.84 G. The paper
    gives neither the estimator's widths nor the blocks' MLP sizes, so its remaining 0.51 M and
    2.40 G (1.5 %) cannot be attributed; these are the figures the README states."""
    with torch.device("meta"):
        model = LUPI(pyairir.create_model("restormer"))
    deployed = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("teacher."))
    assert deployed == 31_422_868
    _, macs = count(model)
    assert round(macs / 1e9, 2) == 160.80
    assert abs(macs / 1e9 - 163.20) / 163.20 < 0.02
