"""CPL: Contrastive Prompt Learning ("Beyond Degradation Redundancy: Contrastive Prompt Learning
for All-in-One Image Restoration").

Sparse Prompt Modules (top-k prompt routing, pyairir.nn.SparsePromptModule) replace the prompt
blocks of PromptIR — the parameters keep their keys, so CPLIR's SparsePromptIR checkpoints load
— or, in a backbone without prompts, are added at the decoder stages PromptIR prompts
(prompt, concat, Transformer block, 1x1 reduction). Contrastive Prompt Regularization trains
the prompts to matter:

    I+ = F(I_d, p_t);   I-_t' = F(I_d, p_t') for m mismatched prompts t' != t
    L_pos = || phi(I+) - phi(I_gt) ||^2                                   (Eq. 4)
    L_neg = mean_t' || phi(I-_t') - phi(I+) ||^2                           (Eq. 5)
    L = || I+ - I_gt ||_1 + alpha (L_pos - L_neg),   alpha = 0.01            (Eq. 6-8)

with phi a frozen VGG16 (relu1_2, relu2_2, relu3_3; ||.||^2 as the mean square over each map,
summed over the three). A mismatched prompt is forced at every Sparse Prompt Module: a random
component other than the one the gate chose there.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn

from pyairir.nn import PromptGenBlock, SparsePromptModule, TransformerBlock
from pyairir.nn.vgg import VGGFeatures
from pyairir.paradigms.base import Paradigm, l1


def load_vgg(path: str | os.PathLike) -> VGGFeatures:
    """VGG16 features from a local state_dict file (torchvision's vgg16 keys); nothing is downloaded."""
    from pyairir.models.checkpoint import read_state_dict

    return VGGFeatures(read_state_dict(path))


class CPL(Paradigm):
    """prompt_len (n), top_k (k, default 1), renormalize (default False: CPLIR's raw softmax
    weights, through which the gate learns; True renormalises as the paper's text, which at
    k = 1 leaves the gate without gradient: pyairir.nn.sparse_prompt). For backbones without
    prompts: stages (default the three deepest), prompt_dims / prompt_sizes per stage (default:
    half the stage's channels, and the stage's size for a 128 x 128 crop). vgg: a VGGFeatures for
    the CPR term (None: L1 only). alpha: CPR weight; negatives: m mismatched prompts per sample
    (at most n - k)."""

    def __init__(self, backbone: nn.Module, prompt_len: int = 5, top_k: int = 1, renormalize: bool = False,
                 stages: tuple[str, ...] | None = None, vgg: VGGFeatures | None = None, alpha: float = 0.01,
                 negatives: int = 4) -> None:
        super().__init__(backbone)
        if not 1 <= negatives <= prompt_len - top_k:
            raise ValueError(f"CPL: negatives must be in [1, prompt_len - top_k = {prompt_len - top_k}], got {negatives}")
        self.alpha, self.negatives = alpha, negatives
        self.vgg = vgg
        existing = [name for name, m in backbone.named_children() if isinstance(m, PromptGenBlock)]
        if existing:  # PromptIR: route its own prompts sparsely
            for name in existing:
                old = getattr(backbone, name)
                _, n, dim, size, _ = old.prompt_param.shape
                if n != prompt_len:
                    raise ValueError(f"CPL: {name} has {n} prompts, prompt_len is {prompt_len}")
                module = SparsePromptModule(dim, n, size, old.linear_layer.in_features, top_k, renormalize)
                module.prompt_param, module.linear_layer, module.conv3x3 = (old.prompt_param, old.linear_layer,
                                                                            old.conv3x3)
                setattr(backbone, name, module)
            self.stages: tuple[str, ...] = ()
            return
        self.stages = tuple(stages or self.deepest_stages(3))
        channels = backbone.stage_channels()
        for k, stage in zip(range(len(self.stages), 0, -1), self.stages):
            c = channels[stage]
            prompt_dim, size = c // 2, 128 // self.stage_scale(stage)
            self.add_module(f"prompt{k}", SparsePromptModule(prompt_dim, prompt_len, size, c, top_k, renormalize))
            self.add_module(f"noise_level{k}", TransformerBlock(c + prompt_dim, 1, 2.66, False, "WithBias"))
            self.add_module(f"reduce_noise_level{k}", nn.Conv2d(c + prompt_dim, c, kernel_size=1, bias=False))

    def prompt_modules(self) -> list[SparsePromptModule]:
        return [m for m in self.modules() if isinstance(m, SparsePromptModule)]

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        if not self.stages:
            return self.backbone(degraded)
        index = {stage: len(self.stages) - i for i, stage in enumerate(self.stages)}

        def inject(stage: str, x: torch.Tensor) -> torch.Tensor:
            if stage not in index:
                return x
            k = index[stage]
            x = torch.cat([x, getattr(self, f"prompt{k}")(x)], 1)
            return getattr(self, f"reduce_noise_level{k}")(getattr(self, f"noise_level{k}")(x))

        return self.backbone.decode(self.backbone.encode(degraded), inject)

    @contextlib.contextmanager
    def forced_prompts(self, selections: list[torch.Tensor]) -> Iterator[None]:
        """Runs the enclosed forward with prompt_modules()[i] using selections[i] (B, k) indices."""
        modules = self.prompt_modules()
        try:
            for module, selection in zip(modules, selections, strict=True):
                module.forced = selection
            yield
        finally:
            for module in modules:
                module.forced = None

    def mismatched_selections(self, generator: torch.Generator | None = None) -> list[list[torch.Tensor]]:
        """For each of `negatives` negatives, per prompt module, (B, 1) indices of a prompt the gate
        did not select in the last forward (all distinct across the negatives of a sample)."""
        per_module = []
        for module in self.prompt_modules():
            chosen = module.last_selection.cpu()  # (B, k)
            batch, n = chosen.shape[0], module.prompt_len
            rows = []
            for b in range(batch):
                others = torch.tensor([i for i in range(n) if i not in chosen[b].tolist()])
                rows.append(others[torch.randperm(len(others), generator=generator)[: self.negatives]])
            per_module.append(torch.stack(rows))  # (B, negatives)
        return [[choice[:, r: r + 1] for choice in per_module] for r in range(self.negatives)]

    def perceptual_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """|| phi(a) - phi(b) ||^2: mean squared difference of each VGG map, summed over the maps."""
        fa, fb = self.vgg(a), self.vgg(b)
        return sum(((fa[name] - fb[name]) ** 2).mean() for name in fa)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        positive = self(degraded)
        reconstruction = l1(positive, clean)
        if self.vgg is None or self.alpha == 0:
            return {"loss": reconstruction, "l1": reconstruction.detach()}
        negatives = []
        for selection in self.mismatched_selections(generator):
            with self.forced_prompts(selection):
                negatives.append(self(degraded))
        l_pos = self.perceptual_distance(positive, clean)
        l_neg = sum(self.perceptual_distance(negative, positive) for negative in negatives) / len(negatives)
        cpr = l_pos - l_neg
        loss = reconstruction + self.alpha * cpr
        return {"loss": loss, "l1": reconstruction.detach(), "cpr": cpr.detach()}
