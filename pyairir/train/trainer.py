"""One trainer for every backbone x paradigm, on one process or many (torchrun).

    pyairir train config.yaml [key=value ...] [--resume]
    torchrun --nproc_per_node=2 -m pyairir.train config.yaml

Every step takes the next global batch of a fixed per-epoch permutation (seeded by seed and
epoch); with N processes each takes every N-th sample of it, so the global batch — and, up to
floating-point summation order, the update — is the same whatever N is. A checkpoint holds the
model (safetensors) and the optimizer, scheduler, RNG and step (state.pt); both are written to a
temporary folder renamed into place, then `latest` is replaced: a run killed at any moment
resumes bit-for-bit from its last complete checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

import pyairir
from pyairir._files import write_text_atomic
from pyairir.data import synthetic_set, training_set
from pyairir.paradigms import CPL, LUPI, SIPL, AlphaSchedule, PrivilegeLearning, load_vgg
from pyairir.paradigms.base import l1
from pyairir.train.config import TrainConfig


class Plain(nn.Module):
    """A backbone trained alone, with the L1 loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return self.model(degraded)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = l1(self.model(degraded), clean)
        return {"loss": loss, "l1": loss.detach()}


class LossModule(nn.Module):
    """forward(degraded, clean) = the model's training loss, so that DDP sees the whole step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.training_loss(degraded, clean)


def build_model(config: TrainConfig) -> nn.Module:
    """The backbone, wrapped in the configured paradigm (or in Plain)."""
    backbone = pyairir.create_model(config.model, fast=config.fast, **config.model_args)
    args = dict(config.paradigm_args)
    if config.paradigm == "pl":
        schedule = AlphaSchedule(**{"total_steps": config.steps, **args.pop("schedule", {})})
        return PrivilegeLearning(backbone, schedule, **args)
    if config.paradigm == "sipl":
        return SIPL(backbone, **args)
    if config.paradigm == "lupi":
        return LUPI(backbone, **args)
    if config.paradigm == "cpl":
        return CPL(backbone, vgg=load_vgg(config.cpl_vgg) if config.cpl_vgg else None, **args)
    return Plain(backbone)


class StepSampler(Sampler):
    """Yields, for each step from `start`, this rank's share of the global batch, as (index, epoch)."""

    def __init__(self, length: int, batch: int, rank: int, world: int, seed: int, start: int, steps: int) -> None:
        self.length, self.batch, self.rank, self.world = length, batch, rank, world
        self.seed, self.start, self.steps = seed, start, steps
        self.per_epoch = length // batch
        if self.per_epoch == 0:
            raise ValueError(f"the training set has {length} samples, fewer than one batch of {batch}")

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, None
        for step in range(self.start, self.steps):
            epoch, offset = divmod(step, self.per_epoch)
            if epoch != order_epoch:
                order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 131 + epoch))
                order_epoch = epoch
            batch = order[offset * self.batch: (offset + 1) * self.batch].tolist()
            yield [(i, epoch) for i in batch[self.rank:: self.world]]


def collate(samples: list[dict]) -> dict:
    return {"degraded": torch.stack([s["degraded"] for s in samples]),
            "clean": torch.stack([s["clean"] for s in samples]), "task": [s["task"] for s in samples]}


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup from 0 over warmup_steps, then cosine from lr to min_lr at `steps`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must divide evenly over {self.world} processes")
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_model(config)
        self.loss = LossModule(self.model)
        if self.world > 1:
            self.loss = nn.parallel.DistributedDataParallel(self.loss, find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.step = 0
        self.out = Path(config.out)

    def dataset(self):
        c = self.config
        if c.benchmark == "synthetic":
            return synthetic_set(c.data, c.synthetic_kinds, c.patch_size, c.seed)
        return training_set(c.data, c.benchmark, c.patch_size, c.seed)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        """Writes checkpoint-<step> (model.safetensors, state.pt, config.json) and points `latest` at it."""
        final = self.out / f"checkpoint-{self.step}"
        temporary = self.out / f".checkpoint-{self.step}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, temporary / "model.safetensors")
        torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate(), "alpha_steps": getattr(self.model, "steps", None)},
                   temporary / "state.pt")
        (temporary / "config.json").write_text(self.config.to_json())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        write_text_atomic(self.out / "latest", final.name)
        return final

    def resume(self) -> bool:
        """Loads the checkpoint `latest` points at; False if there is none."""
        pointer = self.out / "latest"
        if not pointer.is_file():
            return False
        folder = self.out / pointer.read_text().strip()
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(load_file(folder / "model.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(_as_python_rng(state["python_rng"]))
        if state["alpha_steps"] is not None:
            self.model.steps = state["alpha_steps"]
        self.step = state["step"]
        return True

    # ---------------------------------------------------------------- training
    def fit(self) -> nn.Module:
        c = self.config
        data = self.dataset()
        sampler = StepSampler(len(data), c.batch_size, self.rank, self.world, c.seed, self.step, c.steps)
        # The loader draws its workers' base seed from its own generator: from the global RNG it would
        # shift the draws of a resumed run (SIPL's random proxy, CPL's negatives) by one.
        loader = DataLoader(data, batch_sampler=sampler, num_workers=c.num_workers, collate_fn=collate,
                            generator=torch.Generator().manual_seed(c.seed))
        stage2_at = c.lupi_stage2_at if c.lupi_stage2_at is not None else c.steps // 2
        if isinstance(self.model, LUPI) and self.step >= stage2_at and self.model.stage == 1:
            self.model.begin_stage2()
        bar = tqdm(total=c.steps, initial=self.step, desc="train", disable=not c.progress or self.rank != 0)
        started, images = time.perf_counter(), 0
        self.model.train()
        for batch in loader:
            if isinstance(self.model, LUPI) and self.step == stage2_at and self.model.stage == 1:
                self.model.begin_stage2()
            with torch.autocast("cuda" if batch["degraded"].is_cuda else "cpu", dtype=torch.bfloat16,
                                enabled=c.bf16):
                losses = self.loss(batch["degraded"], batch["clean"])
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if isinstance(self.model, PrivilegeLearning):
                self.model.advance()
            self.step += 1
            images += batch["degraded"].shape[0] * self.world
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss'].item():.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                            img_s=f"{images / (time.perf_counter() - started):.1f}")
            if self.rank == 0 and (self.step % c.checkpoint_every == 0 or self.step == c.steps):
                self.save()
        bar.close()
        if self.world > 1:
            dist.barrier()
        return self.model


def _as_python_rng(state):
    """random.getstate() comes back from torch.load with lists where it had tuples."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def train(config: TrainConfig, resume: bool = False) -> nn.Module:
    """Trains as configured (resuming from config.out/latest if asked) and returns the model."""
    trainer = Trainer(config)
    if resume and not trainer.resume() and trainer.rank == 0:
        print(f"pyairir train: no checkpoint in {config.out}; starting from step 0")
    if trainer.rank == 0:
        trainer.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(trainer.out / "config.json", config.to_json())
    return trainer.fit()
