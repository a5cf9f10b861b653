"""load_checkpoint: every official format round-trips strictly; bad files get clear errors."""

from __future__ import annotations

import pickle
import sys
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import pyairir
from pyairir import CheckpointError, load_checkpoint

PROMPTIR = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)


def model(seed: int, name: str = "promptir", **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pyairir.create_model(name, **{**PROMPTIR, **overrides})


def write(path, state_dict, layout: str) -> None:
    """Writes state_dict as the official code would."""
    if layout == "basicsr":  # Restormer/NAFNet/SIPL: torch.save({'params': ...})
        torch.save({"params": state_dict}, path)
    elif layout == "basicsr_ema":
        torch.save({"params_ema": state_dict}, path)
    elif layout == "lightning":  # PromptIR: a Lightning checkpoint of PromptIRModel, whose network is `net`
        torch.save({"epoch": 119, "global_step": 1000, "pytorch-lightning_version": "2.0.1",
                    "state_dict": {f"net.{k}": v for k, v in state_dict.items()},
                    "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 119}}}},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}],
                    "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 119}]}, path)
    elif layout == "ddp":
        torch.save({f"module.{k}": v for k, v in state_dict.items()}, path)
    elif layout == "plain":
        torch.save(state_dict, path)
    elif layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)


@pytest.mark.parametrize("layout, suffix", [
    ("basicsr", ".pth"), ("basicsr_ema", ".pth"), ("lightning", ".ckpt"), ("ddp", ".pt"), ("plain", ".pt"),
    ("safetensors", ".safetensors"),
])
def test_round_trip_strict(tmp_path, layout, suffix):
    source, target = model(0), model(1)
    path = tmp_path / f"weights{suffix}"
    write(path, source.state_dict(), layout)
    assert load_checkpoint(target, path) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


def test_explicit_key(tmp_path):
    source, target = model(0), model(1)
    path = tmp_path / "both.pth"
    torch.save({"params": model(2).state_dict(), "params_ema": source.state_dict()}, path)
    load_checkpoint(target, path, key="params_ema")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match="has no entry 'ema'; it has: 'params', 'params_ema'"):
        load_checkpoint(target, path, key="ema")


def test_wrong_architecture_names_the_keys(tmp_path):
    path = tmp_path / "restormer.pth"
    write(path, model(0, "restormer").state_dict(), "basicsr")
    with pytest.raises(CheckpointError, match=r"does not fit PromptIR: \d+ missing key\(s\): prompt1.prompt_param"):
        load_checkpoint(model(1), path)


def test_wrong_width_names_the_shapes(tmp_path):
    path = tmp_path / "wide.pth"
    write(path, model(0, "restormer", dim=16).state_dict(), "basicsr")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*patch_embed.proj.weight is \[16, 3, 3, 3\] in the "
                                              r"checkpoint, \[8, 3, 3, 3\] in the model"):
        load_checkpoint(model(1, "restormer"), path)


def test_non_strict_warns_and_loads_the_rest(tmp_path):
    source, target = model(0), model(1)
    state_dict = source.state_dict()
    del state_dict["output.weight"]
    path = tmp_path / "partial.pth"
    write(path, state_dict, "plain")
    with pytest.warns(UserWarning, match="1 missing key.*output.weight"):
        load_checkpoint(target, path, strict=False)
    assert torch.equal(target.state_dict()["patch_embed.proj.weight"], state_dict["patch_embed.proj.weight"])
    with pytest.raises(CheckpointError, match="1 missing key"):
        load_checkpoint(target, path)


class Payload:
    """An arbitrary Python object: weights_only loading must refuse it."""


@pytest.mark.parametrize("content, suffix, message", [
    (b"", ".pth", "not a readable PyTorch file"),
    (b"this is not a checkpoint", ".pth", "not a readable PyTorch file"),
    (b"\x00\x01garbage", ".safetensors", "not a readable safetensors file"),
])
def test_corrupt_file(tmp_path, content, suffix, message):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(model(0), path)


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pth"
    write(path, model(0).state_dict(), "basicsr")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch file \(corrupt or truncated\?\): OSError: "):
        load_checkpoint(model(0), path)


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"params": model(0).state_dict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(model(0), path)
    assert str(error.value) == (f"checkpoint {str(path)!r} holds Python objects other than tensors and plain "
                                "containers; pyairir only loads weights (torch.load(weights_only=True)). Re-save its "
                                "state_dict. (Weights only load failed. This file can still be loaded, to do so you "
                                "have two options, \x1b[1mdo those steps only if you trust the source of the "
                                "checkpoint\x1b[0m. )")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="list.pth' holds a list, expected a dict of tensors"):
        load_checkpoint(model(0), path)
    torch.save({"epoch": 3, "weights": {"a": 1}}, path)
    with pytest.raises(CheckpointError, match="neither a state_dict nor holds one.*it has: 'epoch', 'weights'$"):
        load_checkpoint(model(0), path)
    with pytest.raises(CheckpointError, match="neither a state_dict nor holds one under 'params', 'params_ema', "
                                              "'state_dict', 'model'"):
        load_checkpoint(model(0), path)
    torch.save({}, path)  # an empty dict holds no weights
    with pytest.raises(CheckpointError, match="neither a state_dict nor holds one"):
        load_checkpoint(model(0), path)
    torch.save({"params": {"a": 1}}, path)
    with pytest.raises(CheckpointError, match="entry 'params' is not a dict of tensors"):
        load_checkpoint(model(0), path, key="params")
    torch.save({name: 1 for name in "abcde"}, path)  # five entries are all listed
    with pytest.raises(CheckpointError, match="it has: 'a', 'b', 'c', 'd', 'e'$"):
        load_checkpoint(model(0), path)
    torch.save({name: 1 for name in "abcdefg"}, path)
    with pytest.raises(CheckpointError, match="it has: 'a', 'b', 'c', 'd', 'e' and 2 more$"):
        load_checkpoint(model(0), path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(model(0), tmp_path / "nope.pth")


def test_pickle_protocol_is_not_used_for_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps(model(0).state_dict()))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(model(0), path)


def test_a_single_tensor_state_dict(tmp_path):
    source, target = torch.nn.Linear(3, 2, bias=False), torch.nn.Linear(3, 2, bias=False)
    path = tmp_path / "one.pt"
    torch.save(source.state_dict(), path)
    load_checkpoint(target, path)
    assert torch.equal(target.weight, source.weight)


def as_if_saved_on_a_gpu(path) -> None:
    """Rewrites a torch.save file as a GPU's would be: its storages located on cuda:0."""
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as target:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            target.writestr(info, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the point is a machine without a GPU")
def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    """The official checkpoints were saved from GPUs; they load here onto the CPU."""
    source, target = model(0), model(1)
    path = tmp_path / "gpu.pth"
    write(path, source.state_dict(), "basicsr")
    as_if_saved_on_a_gpu(path)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does on this machine
        torch.load(path, weights_only=True)
    load_checkpoint(target, path)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_every_problem_is_listed(tmp_path):
    """Missing, unexpected and mis-shaped keys, each kind listed (', ') and the kinds joined ('; ')."""
    state = model(0).state_dict()
    del state["output.weight"], state["patch_embed.proj.weight"]
    state["extra.weight"], state["spare.bias"] = torch.zeros(1), torch.zeros(1)
    state["prompt1.linear_layer.bias"], state["prompt2.linear_layer.bias"] = torch.zeros(7), torch.zeros(7)
    path = tmp_path / "messy.pth"
    write(path, state, "plain")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(model(1), path, strict=False)
    assert str(error.value) == (
        f"checkpoint {str(path)!r} does not fit PromptIR: 2 missing key(s): patch_embed.proj.weight, output.weight; "
        "2 unexpected key(s): extra.weight, spare.bias; 2 shape mismatch(es): prompt1.linear_layer.bias is [7] in the "
        "checkpoint, [5] in the model; prompt2.linear_layer.bias is [7] in the checkpoint, [5] in the model")


def test_the_non_strict_warning_points_at_the_caller(tmp_path):
    if "mutmut" in sys.modules:
        pytest.skip("under mutation testing a trampoline frame sits between the caller and load_checkpoint")
    state = model(0).state_dict()
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    write(path, state, "plain")
    with pytest.warns(UserWarning, match="1 unexpected key.*extra.weight") as record:
        load_checkpoint(model(1), path, strict=False)
    assert record[0].filename == __file__


def test_integer_weights_for_a_float_parameter_are_refused(tmp_path):
    state = model(0).state_dict()
    state["output.weight"] = torch.ones_like(state["output.weight"], dtype=torch.int64)
    state["patch_embed.proj.weight"] = torch.ones_like(state["patch_embed.proj.weight"], dtype=torch.int32)
    path = tmp_path / "int.pth"
    write(path, state, "plain")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(model(1), path, strict=False)
    assert str(error.value) == (f"checkpoint {str(path)!r} does not fit PromptIR: 2 integer tensor(s) for floating "
                                "parameters: patch_embed.proj.weight is torch.int32 in the checkpoint, torch.float32 "
                                "in the model; output.weight is torch.int64 in the checkpoint, torch.float32 in the "
                                "model")


def test_non_finite_weights_load_with_a_warning(tmp_path):
    state = model(0).state_dict()
    state["output.weight"][0, 0] = float("nan")
    state["patch_embed.proj.weight"][0, 0] = float("inf")
    path = tmp_path / "nan.pth"
    write(path, state, "plain")
    with pytest.warns(UserWarning, match=r"holds NaN or infinite values in 2 tensor\(s\): patch_embed.proj.weight, "
                                         r"output.weight; the model's outputs will not be finite") as record:
        loaded = load_checkpoint(model(1), path)
    if "mutmut" not in sys.modules:  # under mutation testing a trampoline frame sits in between
        assert record[0].filename == __file__
    assert torch.isnan(loaded.output.weight[0, 0]).all()


def test_the_non_strict_warning_lists_every_problem(tmp_path):
    state = model(0).state_dict()
    del state["output.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "both.pth"
    write(path, state, "plain")
    with pytest.warns(UserWarning) as record:
        load_checkpoint(model(1), path, strict=False)
    assert str(record[0].message) == (f"checkpoint {str(path)!r} loaded into PromptIR non-strictly: 1 missing key(s): "
                                      "output.weight; 1 unexpected key(s): extra.weight")
