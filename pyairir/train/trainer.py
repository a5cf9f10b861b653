"""One trainer for every backbone x paradigm, on one process or many (torchrun).

    pyairir train config.yaml [key=value ...] [--resume | --overwrite]
    torchrun --nproc_per_node=2 -m pyairir.train config.yaml

Every step takes the next global batch of a fixed per-epoch permutation (seeded by seed and
epoch); with N processes each takes every N-th sample of it, so the global batch — and, up to
floating-point summation order, the update — is the same whatever N is. A checkpoint holds the
model (safetensors) and the optimizer, scheduler, RNG and step (state.pt); the output folder
(pyairir.train.run_folder) is locked, holds one run, and never loses a checkpoint: a run killed at
any moment resumes bit-for-bit from its last complete checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

import pyairir
from pyairir._files import write_text_atomic
from pyairir.data import check_images, synthetic_set, training_set
from pyairir.paradigms import CPL, LUPI, SIPL, AlphaSchedule, PrivilegeLearning, load_vgg
from pyairir.paradigms.base import l1
from pyairir.train.config import TrainConfig
from pyairir.train.run_folder import RunFolderError, RunLock, find_checkpoint, holds_a_run, move_aside, \
    remove_stale, save_checkpoint


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


def initial_model(config: TrainConfig) -> nn.Module:
    """The model a run of `config` starts from: torch's and Python's generators seeded with
    config.seed, then build_model. The same weights every time, so that how far training moved a
    parameter can be measured later without a checkpoint at step 0."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    return build_model(config)


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
        self.model = initial_model(config)
        self.loss = LossModule(self.model)
        if self.world > 1:
            self.loss = nn.parallel.DistributedDataParallel(self.loss, find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.step = 0
        self.out = Path(config.out)
        self.data = (synthetic_set(config.data, config.synthetic_kinds, config.patch_size, config.seed,
                                   cache_images=config.cache_images)
                     if config.benchmark == "synthetic" else
                     training_set(config.data, config.benchmark, config.patch_size, config.seed,
                                  cache_images=config.cache_images))

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        """Writes checkpoint-<step> and points `latest` at it (pyairir.train.run_folder)."""
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                 "python_rng": random.getstate(), "alpha_steps": getattr(self.model, "steps", None)}
        return save_checkpoint(self.out, self.step, self.model.state_dict(), state, self.config.to_json())

    def resume(self) -> bool:
        """Loads the newest usable checkpoint (`latest`, or the newest complete one if `latest` is
        broken); False if there is none. Refuses a checkpoint of another model or paradigm, or one
        past `steps`; applies and records (resume.log, a warning) any other changed setting."""
        found = find_checkpoint(self.out)
        if found is None:
            return False
        step = found.state["step"]
        changes = _resume_changes(found.config, self.config, found.folder)
        if step > self.config.steps:
            raise ValueError(f"cannot resume {str(found.folder)!r}: it is at step {step}, past steps="
                             f"{self.config.steps}; set steps above {step} to train further")
        try:
            self.model.load_state_dict(found.weights)
        except RuntimeError as error:
            raise ValueError(f"cannot resume {str(found.folder)!r}: its weights do not fit this model: "
                             f"{str(error).splitlines()[0]}") from None
        self.optimizer.load_state_dict(found.state["optimizer"])
        self.scheduler.load_state_dict(found.state["scheduler"])
        torch.set_rng_state(found.state["torch_rng"])
        random.setstate(_as_python_rng(found.state["python_rng"]))
        if found.state["alpha_steps"] is not None:
            self.model.steps = found.state["alpha_steps"]
        self.step = step
        if changes:
            self._apply_optimizer_settings()
            note = (f"resumed {found.folder.name} at step {step} with changed settings: " + "; ".join(changes))
            warnings.warn(note, stacklevel=2)
            if self.rank == 0:
                with open(self.out / "resume.log", "a") as log:
                    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {note}\n")
        return True

    def _apply_optimizer_settings(self) -> None:
        """The configured lr, betas and weight decay replace the checkpoint's (which load_state_dict
        brought back), and the schedule continues from the current step with the configured one."""
        c = self.config
        self.scheduler.base_lrs = [c.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group.update(lr=c.lr * lr_factor(self.step, c), betas=c.betas, weight_decay=c.weight_decay)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---------------------------------------------------------------- training
    def fit(self) -> nn.Module:
        c = self.config
        data = self.data
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


# Settings a checkpoint cannot be resumed under a different value of: they change what the weights are.
_IDENTITY = ("model", "model_args", "paradigm", "paradigm_args")
# Settings that change nothing about the run's result.
_INCIDENTAL = ("fast", "num_workers", "cache_images", "progress", "checkpoint_every", "out")


def _resume_changes(saved: dict, config: TrainConfig, folder: Path) -> list[str]:
    """'name: old -> new' for each setting changed since the checkpoint was written; ValueError if
    one of _IDENTITY changed."""
    current = json.loads(config.to_json())
    changed = {k: (saved.get(k), v) for k, v in current.items() if k in saved and saved[k] != v}
    wrong = [f"{k} was {old!r}, the config says {new!r}" for k, (old, new) in changed.items() if k in _IDENTITY]
    if wrong:
        raise ValueError(f"cannot resume {str(folder)!r} under another model: " + "; ".join(wrong)
                         + "; set them back, or train into a new out folder")
    return [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items() if k not in _INCIDENTAL]


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> nn.Module:
    """Trains as configured and returns the model.

    config.out must be a new or empty folder, unless `resume` (continue the run it holds) or
    `overwrite` (move the run it holds aside to `<out>.old-<date-time>`, then start anew). The
    folder is locked while training: a second run into it is refused."""
    if resume and overwrite:
        raise ValueError("train: resume and overwrite exclude each other (continue the run, or move it aside)")
    trainer = Trainer(config)
    lock = RunLock(trainer.out)
    if trainer.rank == 0:
        lock.acquire()
        if overwrite and holds_a_run(trainer.out):
            lock.release()
            print(f"pyairir train: moved the run in {config.out} aside to {move_aside(trainer.out)}")
            lock.acquire()
        elif not resume and holds_a_run(trainer.out):
            lock.release()
            raise RunFolderError(f"output folder {config.out!r} already holds a run ("
                                 + ", ".join(sorted(p.name for p in trainer.out.iterdir() if p.name != ".lock")[:5])
                                 + "); pass --resume to continue it, --overwrite to move it aside and start "
                                 "anew, or choose another out")
        cleaned = remove_stale(trainer.out)
        if cleaned:
            print(f"pyairir train: cleaned up after a killed run in {config.out}: {'; '.join(cleaned)}")
    try:
        if resume and not trainer.resume() and trainer.rank == 0:
            print(f"pyairir train: no checkpoint in {config.out}; starting from step 0")
        check_images(trainer.data)
        if trainer.rank == 0:
            write_text_atomic(trainer.out / "config.json", config.to_json())
        return trainer.fit()
    finally:
        lock.release()
