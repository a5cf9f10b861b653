"""Privilege Learning (SIPL Eq. 1): the alpha schedules and the feature blend."""

from __future__ import annotations

import pytest
import torch

from pyairir.paradigms import AlphaSchedule, PrivilegeLearning
from tests.paradigms.common import BACKBONES, backbone, batch, train


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
def test_schedules_decrease_from_start_to_zero(kind):
    schedule = AlphaSchedule(kind, total_steps=100, start=0.8)
    values = [schedule(t) for t in range(0, 131)]
    assert values[0] == pytest.approx(0.8)
    assert values[100] == pytest.approx(0.0) and values[130] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert schedule(50) == pytest.approx({"linear": 0.4, "cosine": 0.4, "step": 0.4}[kind])
    # where the three kinds differ: 0.8 (1 - 0.3), 0.8 (1 + cos 0.3 pi) / 2, 0.8 (1 - 1/4)
    assert schedule(30) == pytest.approx({"linear": 0.56, "cosine": 0.635114, "step": 0.6}[kind], abs=1e-6)


def test_step_schedule_drops_in_equal_steps():
    schedule = AlphaSchedule("step", total_steps=100, start=1.0, drops=4)
    assert [schedule(t) for t in (0, 24, 25, 49, 50, 99)] == [1.0, 1.0, 0.75, 0.75, 0.5, 0.25]


def test_bad_schedule():
    with pytest.raises(ValueError, match="kind must be linear, cosine or step"):
        AlphaSchedule("exponential")
    for total_steps, start, drops in [(0, 1.0, 4), (10, -0.1, 4), (10, 1.5, 4), (10, 1.0, 0)]:
        with pytest.raises(ValueError) as error:
            AlphaSchedule("step", total_steps=total_steps, start=start, drops=drops)
        assert str(error.value) == ("AlphaSchedule: total_steps and drops must be positive and start in [0, 1], got "
                                    f"{total_steps}, {drops}, {start}")
    for total_steps, start, drops in [(1, 0.0, 1), (1, 1.0, 1)]:  # the edges are allowed
        AlphaSchedule("step", total_steps=total_steps, start=start, drops=drops)


def test_blend_uses_the_clean_image_only_while_training():
    model = PrivilegeLearning(backbone("restormer"), AlphaSchedule("linear", total_steps=10))
    degraded, clean = batch()
    model.train()
    with torch.no_grad():
        blended, plain = model(degraded, clean), model(degraded)
        assert not torch.allclose(blended, plain)
        model.steps = 10  # alpha has decayed to 0
        torch.testing.assert_close(model(degraded, clean), plain)
        model.steps = 0
        model.eval()  # inference: alpha = 0, no ground truth needed
        torch.testing.assert_close(model(degraded, clean), model(degraded))


def test_alpha_one_decodes_the_clean_features():
    model = PrivilegeLearning(backbone("nafnet_sidd_w32"), AlphaSchedule("linear", total_steps=10, start=1.0)).train()
    degraded, clean = batch()
    with torch.no_grad():
        encoded_clean = model.backbone.encode(clean)
        expected = model.backbone.decode(type(encoded_clean)(encoded_clean.levels, degraded, encoded_clean.size))
        torch.testing.assert_close(model(degraded, clean), expected)


@pytest.mark.parametrize("name", BACKBONES)
def test_trains_on_every_backbone(name):
    model = PrivilegeLearning(backbone(name), AlphaSchedule("cosine", total_steps=8))
    losses = train(model, after_step=model.advance)
    assert losses[-1] < losses[0], losses
    assert model.steps == 8 and model.alpha == 0.0


def test_training_loss_is_the_guided_reconstruction():
    model = PrivilegeLearning(backbone("restormer"), AlphaSchedule("linear", total_steps=10, start=0.5)).train()
    degraded, clean = batch()
    parts = model.training_loss(degraded, clean)
    with torch.no_grad():
        guided = (model(degraded, clean) - clean).abs().mean()
        unguided = (model(degraded) - clean).abs().mean()
    assert parts["loss"].item() == pytest.approx(guided.item(), rel=1e-6)
    assert parts["l1"].item() == pytest.approx(guided.item(), rel=1e-6) and not parts["l1"].requires_grad
    assert abs(guided.item() - unguided.item()) > 1e-6
    assert parts["alpha"].item() == pytest.approx(0.5)


def test_unknown_levels_are_named():
    with pytest.raises(ValueError, match=r"unknown levels \['level9'\]; the backbone has \['level1', 'level2', "
                                         r"'level3', 'latent'\]"):
        PrivilegeLearning(backbone("restormer"), levels=("level1", "level9"))
