"""Tiny backbones for every paradigm test, and a few-step training loop on a fixed batch."""

from __future__ import annotations

import torch

import pyairir

TINY = {
    "restormer": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "promptir": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "adair": dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "nafnet_sidd_w32": dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]),
}
BACKBONES = sorted(TINY)


def backbone(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pyairir.create_model(name, **TINY[name])


def batch(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean): a fixed noisy pair."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 3, size, size, generator=generator)
    return (clean + 0.2 * torch.randn(clean.shape, generator=generator)).clamp(0, 1), clean


def train(model: torch.nn.Module, steps: int = 8, lr: float = 1e-3, after_step=None) -> list[float]:
    """`steps` AdamW steps of model.training_loss on one fixed batch; returns the losses."""
    degraded, clean = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.training_loss(degraded, clean)["loss"]
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    return losses
