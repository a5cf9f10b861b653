"""Backbones: registry, shapes, training, the any-size helper and clear errors."""

from __future__ import annotations

import pytest
import torch

import pyairir
from pyairir.eval import restore
from pyairir.models import NAFNetLocal, PromptIR, Restormer

# Tiny configurations: 32x32 inputs run in milliseconds.
TINY = {
    "restormer": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "restormer_biasfree": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "promptir": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "adair": dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "nafnet_sidd_w32": dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]),
    "nafnet_gopro_w32": dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1],
                             train_size=(1, 3, 16, 16)),
}


# Parameters the official forward gives no gradient: PromptIR's six dead convs; AdaIR's unused conv
# and score_gen, and its rate_conv, whose band sizes are truncated to integers.
NO_GRADIENT = {
    "promptir": tuple(f"{m}." for m in ("chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1",
                                        "reduce_noise_channel_2", "reduce_noise_channel_3")),
    "adair": tuple(f"fre{i}.{m}." for i in (1, 2, 3) for m in ("conv", "score_gen", "rate_conv")),
}


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pyairir.create_model(name, **TINY[name])


def test_list_models():
    assert set(pyairir.list_models()) >= {"restormer", "promptir", "nafnet_sidd_w32", "nafnet_gopro_w64"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_shape_and_backward(name):
    model = tiny(name).train()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == x.shape
    out.abs().mean().backward()
    for key, p in model.named_parameters():
        if key.startswith(NO_GRADIENT.get(name, ())):
            assert p.grad is None, key
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), key


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("shape", [(1, 3, 37, 29), (3, 20, 9)])
def test_restore_any_size(name, shape):
    model = tiny(name).eval()
    image = torch.rand(shape)
    out = restore(model, image)
    assert out.shape == image.shape
    if name.startswith("restormer") and shape == (1, 3, 37, 29):
        # the helper is: reflect-pad right/bottom to 40x32, forward, crop
        padded = torch.nn.functional.pad(image, (0, 3, 0, 3), mode="reflect")
        with torch.no_grad():
            torch.testing.assert_close(out, model(padded)[..., :37, :29])


def test_nafnet_pads_itself_like_the_official_code():
    model = tiny("nafnet_sidd_w32").eval()
    x = torch.rand(1, 3, 19, 27)
    with torch.no_grad():
        out = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 5, 0, 13)))  # zeros to 32x32
    torch.testing.assert_close(out, padded[..., :19, :27])


def test_nafnet_local_pools_locally_on_large_inputs():
    model = tiny("nafnet_gopro_w32")
    pools = [m for m in model.modules() if type(m).__name__ == "LocalAvgPool2d"]
    assert len(pools) == 5 and pools[0].kernel_size == (24, 24)  # 1.5 x 16 at full resolution
    x = torch.rand(1, 8, 40, 36)
    local = pools[0](x)
    assert local.shape == x.shape
    torch.testing.assert_close(local[0, :, 0, 0], x[0, :, :24, :24].mean(dim=(-2, -1)))  # replicated corner
    # 17x13 window positions, replicate-padded by 11 before and 12 after: (20, 18) is the window at (9, 7)
    torch.testing.assert_close(local[0, :, 20, 18], x[0, :, 9:33, 7:31].mean(dim=(-2, -1)))
    small = torch.rand(1, 8, 20, 20)
    torch.testing.assert_close(pools[0](small), small.mean(dim=(-2, -1), keepdim=True))


def test_nafnet_local_has_nafnet_state_dict():
    assert list(tiny("nafnet_gopro_w32").state_dict()) == list(tiny("nafnet_sidd_w32").state_dict())


@pytest.mark.parametrize("name", ["restormer", "promptir", "nafnet_sidd_w32"])
@pytest.mark.parametrize("x, message", [
    (torch.rand(3, 32, 32), r"inp_img must be a 4-D \(B, C, H, W\) tensor, got 3-D"),
    (torch.rand(1, 4, 32, 32), r"inp_img must have 3 channels \(dim 1\), got shape \(1, 4, 32, 32\)"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "inp_img must be a floating tensor.*got torch.uint8"),
    (torch.rand(1, 3, 0, 32), "inp_img must not be empty"),
])
def test_bad_input_is_a_clear_error(name, x, message):
    with pytest.raises(ValueError, match=message):
        tiny(name)(x)


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_size_not_multiple_of_8_names_the_helper(name):
    with pytest.raises(ValueError, match=r"multiples of 8, got 30x32.*pyairir.eval.restore"):
        tiny(name)(torch.rand(1, 3, 30, 32))


def test_non_tensor_input():
    with pytest.raises(TypeError, match="inp_img must be a torch.Tensor"):
        tiny("restormer")([[0.0]])


def test_promptir_without_decoder_says_it_cannot_run():
    model = PromptIR(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, decoder=False)
    with pytest.raises(ValueError, match=r"PromptIR\(decoder=False\) cannot run"):
        model(torch.rand(1, 3, 16, 16))


def test_create_model_errors():
    with pytest.raises(ValueError, match="unknown model 'restormr'; available: .*restormer"):
        pyairir.create_model("restormr")
    with pytest.raises(TypeError, match="Restormer has no argument widht; it takes: inp_channels"):
        pyairir.create_model("restormer", widht=3)
    with pytest.raises(ValueError, match="fast_imp=True"):
        NAFNetLocal(width=8, fast_imp=True)


def test_create_model_overrides_and_seeded_init():
    model = pyairir.create_model("restormer", dim=16, LayerNorm_type="BiasFree", num_blocks=[1, 1, 1, 1])
    assert isinstance(model, Restormer) and model.patch_embed.proj.out_channels == 16
    assert "encoder_level1.0.norm1.body.bias" not in model.state_dict()
    with pytest.raises(ValueError, match="^LayerNorm_type must be 'WithBias' or 'BiasFree', got 'biasfree'$"):
        pyairir.create_model("restormer", LayerNorm_type="biasfree")  # a typo would silently give WithBias
    # same seed, same weights
    torch.manual_seed(3)
    a = pyairir.create_model("promptir", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1).state_dict()
    torch.manual_seed(3)
    b = pyairir.create_model("promptir", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
