"""The trainer: every paradigm, checkpoints, bit-for-bit resume after SIGKILL, DDP equivalence."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pyairir.data import write_image
from pyairir.train import TrainConfig, load_config, train
from pyairir.train.trainer import StepSampler, Trainer, initial_model, lr_factor

ROOT = Path(__file__).resolve().parents[2]
TINY_NAFNET = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}


def photos(folder: Path, count: int = 3) -> Path:
    for i in range(count):
        y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 56), indexing="ij")
        write_image(folder / f"{i}.png", torch.stack([x, y, (x * y + 0.3 * i) % 1]))
    return folder


def config(tmp_path: Path, **overrides) -> TrainConfig:
    settings = dict(model="nafnet_sidd_w32", model_args=TINY_NAFNET, data=str(photos(tmp_path / "photos")),
                    benchmark="synthetic", patch_size=32, batch_size=4, steps=6, lr=1e-3, checkpoint_every=3,
                    out=str(tmp_path / "run"), progress=False)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("paradigm, args", [("none", {}), ("pl", {}), ("sipl", {"train_size": 32}),
                                            ("lupi", {"prior_dim": 16, "estimator_width": 4}), ("cpl", {})])
def test_every_paradigm_trains_and_checkpoints(tmp_path, paradigm, args):
    c = config(tmp_path, paradigm=paradigm, paradigm_args=args)
    model = train(c)
    run = Path(c.out)
    assert (run / "latest").read_text() == "checkpoint-6"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-3", "checkpoint-6"]
    saved = load_file(run / "checkpoint-6" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert json.loads((run / "checkpoint-6" / "config.json").read_text())["paradigm"] == paradigm
    if paradigm == "lupi":
        assert model.stage == 2  # stage 2 from steps // 2 on
    if paradigm == "pl":
        assert model.steps == 6


def test_initial_model_is_the_model_a_run_starts_from(tmp_path):
    c = config(tmp_path, paradigm="sipl", paradigm_args={"train_size": 32})
    torch.rand(7)  # whatever was drawn before
    started = Trainer(c).model.state_dict()
    torch.rand(3)
    again = initial_model(c).state_dict()
    assert started.keys() == again.keys() and all(torch.equal(started[k], again[k]) for k in started)
    assert not torch.equal(again["privileged_dictionary1"], initial_model(dataclasses.replace(c, seed=1)).privileged_dictionary1)


def test_trainer_takes_the_benchmark_set_and_optimizer_settings_it_is_given(tmp_path):
    from pyairir.data import training_set
    from tests.data.tree import make_training_tree

    root = make_training_tree(tmp_path / "Train")
    c = config(tmp_path, benchmark="3task", data=str(root), patch_size=16, seed=5, lr=5e-4, betas=[0.8, 0.95],
               weight_decay=0.05)
    trainer = Trainer(c)
    expected = training_set(root, "3task", 16, 5)
    assert trainer.data.entries == expected.entries and (trainer.data.patch_size, trainer.data.seed) == (16, 5)
    group = trainer.optimizer.param_groups[0]
    assert (group["initial_lr"], group["betas"], group["weight_decay"]) == (5e-4, (0.8, 0.95), 0.05)


def test_cosine_schedule_values():
    """Linear warmup to lr, then half a cosine from lr down to min_lr, at realistic settings."""
    import math

    c = TrainConfig(steps=1010, warmup_steps=10, lr=2e-4, min_lr=1e-6)
    floor = 1e-6 / 2e-4
    assert lr_factor(4, c) == pytest.approx(0.5, rel=1e-12)
    assert lr_factor(10, c) == pytest.approx(1.0, rel=1e-12)  # the peak, right after warmup
    assert lr_factor(510, c) == pytest.approx(floor + (1 - floor) / 2, rel=1e-12)  # half way down
    assert lr_factor(760, c) == pytest.approx(floor + (1 - floor) * (1 + math.cos(math.pi * 0.75)) / 2, rel=1e-12)
    assert lr_factor(1009, c) == pytest.approx(floor + (1 - floor) * (1 + math.cos(math.pi * 0.999)) / 2, rel=1e-12)


def test_schedule_and_sampler():
    c = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(99, c) == pytest.approx(0.1, abs=1e-3)
    single = list(StepSampler(10, 4, 0, 1, seed=0, start=0, steps=5))
    split = [list(StepSampler(10, 4, r, 2, seed=0, start=0, steps=5)) for r in range(2)]
    for step in range(5):  # the two ranks share each global batch between them
        assert sorted(single[step]) == sorted(split[0][step] + split[1][step])
    resumed = StepSampler(10, 4, 0, 1, seed=0, start=3, steps=5)
    assert list(resumed) == single[3:] and len(resumed) == 2


@pytest.mark.parametrize("paradigm, args", [("none", {}), ("pl", {}), ("lupi", {"prior_dim": 16, "estimator_width": 4}),
                                            ("sipl", {"train_size": 32, "use_random_proxy": True})])
def test_resume_in_process_continues_bit_for_bit(tmp_path, paradigm, args):
    """A run resumed from its step-3 checkpoint (weights, optimizer, scheduler, the RNG that SIPL's
    random proxy draws from, PL's alpha steps, LUPI's stage) ends with the weights of the run
    that was never interrupted."""
    c = config(tmp_path, paradigm=paradigm, paradigm_args=args, lupi_stage2_at=2)
    final = {k: v.clone() for k, v in train(c).state_dict().items()}
    run = Path(c.out)
    (run / "checkpoint-6").rename(run / "reference-6")
    (run / "latest").write_text("checkpoint-3")
    trainer = Trainer(c)
    assert trainer.resume() and trainer.step == 3
    resumed = trainer.fit()
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in final.items())
    if paradigm == "pl":
        assert resumed.steps == 6


def test_resume_without_a_checkpoint_and_from_a_file_holding_code(tmp_path):
    c = config(tmp_path)
    assert Trainer(c).resume() is False  # nothing to resume from
    train(c)
    state = Path(c.out) / "checkpoint-6" / "state.pt"
    torch.save({"step": 6, "payload": Payload()}, state)  # a pickle that would run code on loading
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        Trainer(c).resume()


class Payload:
    """An arbitrary Python object: a trainer state must never unpickle it."""


def test_collate_stacks_the_images_and_lists_the_tasks():
    from pyairir.train.trainer import collate

    samples = [{"degraded": torch.full((3, 2, 2), float(i)), "clean": torch.full((3, 2, 2), i + 0.5), "task": t}
               for i, t in enumerate(["rain", "haze"])]
    batch = collate(samples)
    assert set(batch) == {"degraded", "clean", "task"} and batch["task"] == ["rain", "haze"]
    assert batch["degraded"].shape == (2, 3, 2, 2) and batch["clean"][1, 0, 0, 0].item() == 1.5


def test_plain_training_loss():
    from pyairir.train.trainer import Plain

    model = Plain(torch.nn.Conv2d(3, 3, 1))
    degraded, clean = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    parts = model.training_loss(degraded, clean)
    expected = (model(degraded) - clean).abs().mean()
    assert set(parts) == {"loss", "l1"}
    assert parts["loss"].item() == pytest.approx(expected.item()) and parts["l1"].item() == parts["loss"].item()


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"preset": "restormer", "steps": 50}))
    c = load_config(path, ["batch_size=2", 'model_args={"dim": 8}'])
    assert (c.model, c.lr, c.grad_clip, c.steps, c.batch_size, c.model_args) == ("restormer", 3e-4, 0.01, 50, 2,
                                                                                 {"dim": 8})
    with pytest.raises(ValueError, match="unknown training settings learning_rate"):
        load_config(None, ["learning_rate=1"])


def run_cli(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.Popen([sys.executable, "-m", "pyairir.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def write_config(tmp_path: Path, out: str, steps: int) -> Path:
    c = config(tmp_path, steps=steps, checkpoint_every=25, out=str(tmp_path / out))
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(json.loads(c.to_json())))
    return path


@pytest.mark.multiprocess
def test_killed_run_resumes_bit_for_bit(tmp_path):
    steps = 300
    reference = run_cli([str(write_config(tmp_path, "reference", steps))])
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    killed = run_cli([str(write_config(tmp_path, "killed", steps))])
    latest = tmp_path / "killed" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill it between two checkpoints, after the first
        if latest.is_file() and latest.read_text() not in ("", "checkpoint-25"):
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    reached = int(latest.read_text().split("-")[1])
    assert 25 < reached < steps, f"the run was killed at checkpoint {reached}"
    resumed = run_cli([str(tmp_path / "killed.yaml"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = load_file(tmp_path / "reference" / f"checkpoint-{steps}" / "model.safetensors")
    b = load_file(tmp_path / "killed" / f"checkpoint-{steps}" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.multiprocess
def test_two_process_ddp_matches_one_process(tmp_path):
    steps = 4
    single = run_cli([str(write_config(tmp_path, "single", steps))])
    assert single.wait(timeout=300) == 0, single.stderr.read()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "pyairir.train", str(write_config(tmp_path, "ddp", steps))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(tmp_path / "single" / f"checkpoint-{steps}" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / f"checkpoint-{steps}" / "model.safetensors")
    for key in a:  # the same global batches; only the order of floating-point sums differs
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)


def test_adair_preset_trains(tmp_path):
    """The adair preset (AdaIR's train.py settings) with a tiny AdaIR: two steps, a checkpoint."""
    from pyairir.train.config import from_preset

    c = from_preset("adair", model_args={"dim": 16, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1},
                    data=str(photos(tmp_path / "photos")), benchmark="synthetic", patch_size=32, batch_size=2,
                    steps=2, checkpoint_every=2, out=str(tmp_path / "run"), progress=False)
    assert (c.model, c.lr, c.weight_decay, c.warmup_steps) == ("adair", 2e-4, 0.01, 0)
    train(c)
    assert (tmp_path / "run" / "latest").read_text() == "checkpoint-2"


def test_progress_bar_counts_steps_and_images(tmp_path, monkeypatch, capsys):
    """The bar: `train`, steps of the run (a resumed run starts where it stopped), loss, lr and
    images per second (here with a clock that advances one second per reading: 4 images a step)."""
    import pyairir.train.trainer as trainer_module

    clock = iter(range(10_000))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    c = config(tmp_path, steps=3, checkpoint_every=3, progress=True)
    train(c)
    err = capsys.readouterr().err
    final = [line for line in err.replace("\r", "\n").splitlines() if "3/3" in line][-1]  # the bar at the end
    assert final.startswith("train: 100%") and "loss=0." in final
    assert f"lr={1e-3 * lr_factor(3, c):.2e}" in final and "img_s=4.0" in final  # 12 images in 3 clock seconds
    with pytest.warns(UserWarning, match="steps: 3 -> 5"):
        train(config(tmp_path, steps=5, checkpoint_every=5, progress=True), resume=True)
    err = capsys.readouterr().err
    assert "5/5" in err and "3/5" in err and "img_s=4.0" in err
    train(config(tmp_path / "quiet", steps=2, checkpoint_every=2, progress=False))
    assert "train" not in capsys.readouterr().err


def test_gradient_clipping_and_bf16_change_the_run(tmp_path):
    plain = train(config(tmp_path / "a", steps=2, checkpoint_every=2)).state_dict()
    clipped = train(config(tmp_path / "b", steps=2, checkpoint_every=2, grad_clip=1e-4)).state_dict()
    bf16 = train(config(tmp_path / "c", steps=2, checkpoint_every=2, bf16=True)).state_dict()
    again = train(config(tmp_path / "d", steps=2, checkpoint_every=2)).state_dict()
    assert all(torch.equal(plain[k], again[k]) for k in plain)  # deterministic: the differences are the options'
    assert any(not torch.equal(plain[k], clipped[k]) for k in plain)
    assert any(not torch.equal(plain[k], bf16[k]) for k in plain)


def test_lupi_stage_2_starts_at_its_step(tmp_path, monkeypatch):
    """At lupi_stage2_at (default steps // 2), and at once when a run resumes past it in stage 1."""
    from pyairir.paradigms import LUPI

    begin = LUPI.begin_stage2
    args = {"prior_dim": 16, "estimator_width": 4}
    for steps, at, expected in [(7, None, 3), (6, 4, 4)]:
        c = config(tmp_path / f"{steps}-{at}", steps=steps, checkpoint_every=steps, paradigm="lupi",
                   paradigm_args=args, lupi_stage2_at=at)
        trainer = Trainer(c)
        seen = []
        monkeypatch.setattr(LUPI, "begin_stage2", lambda self, *a: (seen.append(trainer.step), begin(self, *a)))
        trainer.fit()
        assert seen == [expected] and trainer.model.stage == 2
    # a stage-1 checkpoint at step 3, resumed with stage 2 due from step 2: switched before the first step
    c = config(tmp_path / "resume", steps=3, checkpoint_every=3, paradigm="lupi", paradigm_args=args, lupi_stage2_at=3)
    train(c)
    resumed = Trainer(config(tmp_path / "resume", steps=5, checkpoint_every=5, paradigm="lupi", paradigm_args=args,
                             lupi_stage2_at=2))
    with pytest.warns(UserWarning):
        assert resumed.resume() and resumed.model.stage == 1
    seen = []
    monkeypatch.setattr(LUPI, "begin_stage2", lambda self, *a: (seen.append(resumed.step), begin(self, *a)))
    resumed.fit()
    assert seen == [3] and resumed.model.stage == 2


def test_sampler_order_is_fixed_and_needs_one_batch():
    """Epoch e's order is randperm(length) seeded with seed * 131 + e, a formula kept fixed so that a
    checkpoint resumes with the same batches whatever version wrote it."""
    sampler = StepSampler(10, 5, 0, 1, seed=3, start=0, steps=4)  # two steps an epoch
    steps = list(sampler)
    for epoch in (0, 1):
        order = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 131 + epoch)).tolist()
        assert [i for i, _ in steps[2 * epoch]] + [i for i, _ in steps[2 * epoch + 1]] == order
    assert len(list(StepSampler(4, 4, 0, 1, seed=0, start=0, steps=2))) == 2  # exactly one batch an epoch
    with pytest.raises(ValueError) as error:
        StepSampler(3, 4, 0, 1, seed=0, start=0, steps=2)
    assert str(error.value) == "the training set has 3 samples, fewer than one batch of 4"


def test_build_model_makes_what_the_config_names(tmp_path):
    from safetensors.torch import save_file

    from pyairir.nn.vgg import VGGFeatures
    from pyairir.paradigms import CPL, LUPI, SIPL, PrivilegeLearning
    from pyairir.train.trainer import Plain, build_model

    vgg = VGGFeatures(random=True)
    weights = {f"features.{k}": v.contiguous() for k, v in vgg.features.state_dict().items()}
    save_file(weights, tmp_path / "vgg.safetensors")
    cases = [("none", {}, Plain), ("pl", {"schedule": {"kind": "linear"}, "levels": ["latent"]}, PrivilegeLearning),
             ("sipl", {"train_size": 32}, SIPL), ("lupi", {"prior_dim": 16, "estimator_width": 4}, LUPI),
             ("cpl", {"top_k": 2, "negatives": 3}, CPL)]
    for paradigm, args, cls in cases:
        c = config(tmp_path, paradigm=paradigm, paradigm_args=args, fast=True,
                   cpl_vgg=str(tmp_path / "vgg.safetensors") if paradigm == "cpl" else None)
        model = build_model(c)
        assert type(model) is cls
        backbone = model.model if paradigm == "none" else model.backbone
        assert backbone.width == 8 and backbone.ending.weight.is_contiguous(memory_format=torch.channels_last)
        assert any(getattr(m, "fast", False) is True for m in backbone.modules())
    assert model.negatives == 3 and torch.equal(model.vgg.features[0].weight, vgg.features[0].weight)
    pl = build_model(config(tmp_path, paradigm="pl", paradigm_args=cases[1][1]))
    assert (pl.schedule.kind, pl.schedule.total_steps, pl.levels) == ("linear", 6, ("latent",))
    sipl = build_model(config(tmp_path, paradigm="sipl", paradigm_args={"train_size": 32}))
    lupi = build_model(config(tmp_path, paradigm="lupi", paradigm_args={"prior_dim": 16, "estimator_width": 4}))
    sizes = {p.shape[-1] for name, p in sipl.named_parameters() if name.startswith("privileged_dictionary")}
    assert sizes == {32 // sipl.stage_scale(stage) for stage in sipl.stages}
    assert lupi.student.head[-1].out_features == 16
