"""SIPL: the official PromptIR_ProxyFusion structure and outputs, and the paradigm on every backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pyairir
from pyairir.models.complexity import count
from pyairir.paradigms import SIPL
from tests.models.deterministic_weights import deterministic_value, fill_deterministic
from tests.paradigms.common import BACKBONES, backbone, batch, train

DATA = Path(__file__).parent / "data"
# Keys and shapes of the official classes (Aitical/SIPL @bd8b7ad PromptIR_ProxyFusion(decoder=True),
# Aitical/CPLIR @801b4ff SparsePromptIR(decoder=True)), and float64 outputs of their shallow
# configuration (num_blocks [1, 1, 1, 1], one refinement block) with deterministic weights.
MANIFEST = json.loads((DATA / "official_state_dicts.json").read_text())
SHALLOW = dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)


def test_state_dict_is_the_official_one():
    with torch.device("meta"):
        model = SIPL(pyairir.create_model("promptir"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == dict(MANIFEST["sipl_promptir"])
    assert sum(p.numel() for p in model.parameters()) == 40_028_562


@pytest.mark.parametrize("backbone", ["promptir", "adair"])
def test_official_checkpoint_file_loads_strict(tmp_path, backbone):
    """A BasicSR file ({'params': ...}, what SIPL's code saves) with exactly the official keys and
    shapes (the manifest, not our model) loads with load_checkpoint into SIPL(PromptIR or AdaIR)."""
    official = {name: deterministic_value(name, torch.Size(shape)).float()
                for name, shape in MANIFEST[f"sipl_{backbone}"]}
    path = tmp_path / "sipl.pth"
    torch.save({"params": official}, path)
    model = pyairir.load_checkpoint(SIPL(pyairir.create_model(backbone)), path)
    state = model.state_dict()
    assert set(state) == set(official)
    assert all(torch.equal(state[k], v) for k, v in official.items())


def test_loaded_checkpoint_gives_the_official_output(tmp_path):
    expected = load_file(DATA / "official_outputs.safetensors")
    path = tmp_path / "sipl.pth"
    torch.save({"params": fill_deterministic(SIPL(pyairir.create_model("promptir", **SHALLOW)).double()).state_dict()},
               path)
    model = pyairir.load_checkpoint(SIPL(pyairir.create_model("promptir", **SHALLOW)).double(), path).eval()
    with torch.no_grad():
        out = model(expected["input"])
    reference = expected["sipl_unguided"]
    torch.testing.assert_close(out, reference, atol=1e-12 * reference.abs().max().item(), rtol=1e-12)


def test_sipl_adair_state_dict_is_the_official_one():
    """The keys and shapes of Aitical/SIPL's AdaIR_ProxyFusion (in another order: loading does not care)."""
    with torch.device("meta"):
        model = SIPL(pyairir.create_model("adair"))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == dict(MANIFEST["sipl_adair"])


@pytest.mark.parametrize("backbone", ["promptir", "adair"])
@pytest.mark.parametrize("guided", [False, True], ids=["unguided", "guided"])
def test_outputs_equal_official(guided, backbone):
    expected = load_file(DATA / "official_outputs.safetensors")
    model = fill_deterministic(SIPL(pyairir.create_model(backbone, **SHALLOW)).double()).eval()
    with torch.no_grad():
        privileged = None
        if guided:  # the official privileged features: the encoder features of another image
            levels = model.backbone.encode(expected["privileged_image"]).levels
            privileged = {stage: levels[stage] for stage in model.stages}
        out = model(expected["input"], privileged)
    prefix = "sipl" if backbone == "promptir" else f"sipl_{backbone}"
    reference = expected[f"{prefix}_guided" if guided else f"{prefix}_unguided"]
    torch.testing.assert_close(out, reference, atol=1e-12 * reference.abs().max().item(), rtol=1e-12)


def test_counts_against_table_9():
    """Parameters and MACs at 3x256x256 (meta device); SIPL Table 9 reports 39 M / 193 G for a
    single pass (PromptIR: 36 M / 173 G)."""
    with torch.device("meta"):
        model = SIPL(pyairir.create_model("promptir"))
    params, macs = count(model)
    assert round(params / 1e6) == 40  # the official class has 40,028,562; Table 9 rounds to 39 M
    assert 185e9 < macs < 200e9, macs / 1e9


def test_sipl_adair_has_the_official_parameter_count():
    """Aitical/SIPL's AdaIR_ProxyFusion (basicsr/archs/adair_arch.py) has 33,436,419 parameters."""
    with torch.device("meta"):
        model = SIPL(pyairir.create_model("adair"))
    assert sum(p.numel() for p in model.parameters()) == 33_436_419


def test_training_loss_is_the_guided_reconstruction():
    """L1 of the pass guided by the ground truth's own features (not of the unguided pass)."""
    torch.manual_seed(0)
    model = SIPL(backbone("restormer"), train_size=32)
    with torch.no_grad():  # the dictionaries start at zero: give the fusion something to do
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    degraded, clean = batch()
    losses = model.training_loss(degraded, clean)
    with torch.no_grad():
        guided = (model(degraded, model.privileged_features(clean)) - clean).abs().mean()
        unguided = (model(degraded) - clean).abs().mean()
    assert set(losses) == {"loss", "l1"} and losses["l1"].item() == losses["loss"].item()
    assert losses["loss"].item() == pytest.approx(guided.item(), rel=1e-6)
    assert abs(guided.item() - unguided.item()) > 1e-4


@pytest.mark.parametrize("name", BACKBONES)
def test_trains_on_every_backbone(name):
    losses = train(SIPL(backbone(name), train_size=32))  # small dictionaries: tiny backbones, fast tests
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", BACKBONES)
def test_privileged_image_changes_the_output_and_inference_needs_no_truth(name):
    model = SIPL(backbone(name), train_size=32).eval()
    with torch.no_grad():
        for p in model.parameters():  # the dictionaries start at zero: give the fusion something to do
            p.add_(0.05 * torch.randn_like(p))
    degraded, clean = batch()
    with torch.no_grad():
        plain = model(degraded)
        with_clean = model(degraded, model.privileged_features(clean))
        with_other = model(degraded, model.privileged_features(torch.rand_like(clean)))
    assert plain.shape == degraded.shape
    assert not torch.allclose(with_clean, with_other)
    assert not torch.allclose(plain, with_clean)


def test_random_proxy_blends_each_sample_with_the_dictionary():
    """use_random_proxy (official option): F'_PI = (1 - w) p_cross(PD, F_PI) + w PD, one w ~ U(0, 1)
    per sample and stage, drawn in decoder order; without privileged features PD alone."""
    model = SIPL(backbone("promptir"), use_random_proxy=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    degraded, clean = batch()
    with torch.no_grad():
        privileged = model.privileged_features(clean, restore=False)
        torch.manual_seed(3)
        blended = model(degraded, privileged)
        torch.manual_seed(3)
        proxies = {}
        for stage in model.stages:  # the decoder meets the stages deepest first
            k = model.index[stage]
            dictionary = getattr(model, f"privileged_dictionary{k}").repeat(2, 1, 1, 1)
            w = torch.rand(2, 1, 1, 1)
            proxies[stage] = (1 - w) * getattr(model, f"p{k}_cross")(dictionary, privileged[stage]) + w * dictionary
        torch.testing.assert_close(blended, model(degraded, proxies=proxies))
        model.use_random_proxy = False
        assert not torch.allclose(blended, model(degraded, privileged))
        unguided = model(degraded)
        model.use_random_proxy = True
        torch.testing.assert_close(model(degraded), unguided)


@pytest.mark.parametrize("name", ["restormer", "adair"])
@pytest.mark.parametrize("loop", ["paper", "official"])
@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_restore_returns_every_iterate(loop, iterations, name):
    model = SIPL(backbone(name)).eval()
    degraded, _ = batch()
    images = model.restore(degraded, iterations=iterations, loop=loop)
    assert len(images) == iterations + 1
    assert all(image.shape == degraded.shape for image in images)
    with torch.no_grad():
        torch.testing.assert_close(images[0], model(degraded))
        if iterations >= 1:  # both loops start with one guided refinement of the first output
            torch.testing.assert_close(images[1], model(degraded, model.privileged_features(images[0], restore=False)))


def test_official_loop_restores_its_own_output_again():
    model = SIPL(backbone("restormer")).eval()
    degraded, _ = batch()
    images = model.restore(degraded, iterations=2, loop="official")
    with torch.no_grad():
        expected = model(images[1], model.privileged_features(images[1]))
    torch.testing.assert_close(images[2], expected)


def test_ground_truth_guided_upper_bound():
    model = SIPL(backbone("promptir")).eval()
    degraded, clean = batch()
    images = model.restore(degraded, guide=clean)
    with torch.no_grad():
        torch.testing.assert_close(images[1], model(degraded, model.privileged_features(clean)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="loop must be 'paper' or 'official'"):
        SIPL(backbone("restormer")).restore(batch()[0], loop="twice")
    messages = [
        (dict(stages=("level9",)), "SIPL: stages ['level9'] are not both decoder stages and encoder levels of "
                                   "Restormer (stages ['latent', 'level3', 'level2', 'level1'])"),
        (dict(stages=("latent", "level1")), "SIPL: at level1 the encoder has 8 channels but the decoder 16; "
                                            "privileged features would not fit"),
        (dict(dictionary_heads=(1, 2)), "SIPL: give dictionary_heads and fusion_heads for each of the 3 stages"),
        (dict(LayerNorm_type="Biasfree"), "LayerNorm_type must be 'WithBias' or 'BiasFree', got 'Biasfree'"),
    ]
    for kwargs, message in messages:
        with pytest.raises(ValueError) as error:
            SIPL(backbone("restormer"), **kwargs)
        assert str(error.value) == message
    with pytest.raises(TypeError) as error:
        SIPL(torch.nn.Conv2d(3, 3, 3))
    assert str(error.value) == ("SIPL: the backbone must implement pyairir's hook protocol (encode/decode, "
                                "level_channels, stage_channels), got Conv2d; use a model from pyairir.create_model")


def test_fusion_blocks_take_the_bias_and_layer_norm_asked_for():
    default = SIPL(backbone("restormer"))
    assert "p1_cross.norm11.body.bias" in default.state_dict() and "p1_cross.attn.q.bias" not in default.state_dict()
    custom = SIPL(backbone("restormer"), bias=True, LayerNorm_type="BiasFree")
    keys = set(custom.state_dict())
    assert "p1_cross.norm11.body.bias" not in keys and "cross_p3.norm2.body.bias" not in keys
    assert {"p1_cross.attn.q.bias", "cross_p3.ffn.project_out.bias"} <= keys


def test_the_default_dictionary_init_learns_where_the_official_zeros_freeze():
    """A zero dictionary gives zero queries, whose normalisation's 1/1e-12 makes PD's first gradient
    huge; Adam's second moment keeps it, so PD's later gradients move it by a negligible fraction
    of a normal step (|g| / sqrt(v) tiny). The default N(0, 0.02^2) init has an ordinary first
    gradient, and Adam's steps follow PD's current gradient."""
    def run(init: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = SIPL(backbone("promptir"), train_size=32, dictionary_init=init).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        degraded, clean = batch()
        for step in range(8):
            optimizer.zero_grad()
            model.training_loss(degraded, clean)["loss"].backward()
            gradient = model.privileged_dictionary1.grad
            first = gradient.abs().max().item() if step == 0 else first
            optimizer.step()
        state = optimizer.state[model.privileged_dictionary1]
        v_hat = state["exp_avg_sq"] / (1 - 0.999 ** 8)
        return first, (gradient.abs() / (v_hat.sqrt() + 1e-8)).mean().item()  # |g_8| / sqrt(v), per element

    zeros_first, zeros_follow = run("zeros")
    normal_first, normal_follow = run("normal")
    assert zeros_first > 1e4 and zeros_follow < 1e-6  # the official init: a huge first gradient, then frozen
    assert normal_first < 10 and normal_follow > 1e-2  # the default: an ordinary gradient, and PD follows it
    with pytest.raises(ValueError, match="dictionary_init must be 'normal' or 'zeros', got 'ones'"):
        SIPL(backbone("promptir"), dictionary_init="ones")
