"""Privilege Learning and Self-Improved Privilege Learning (Wu et al., "Boosting All-in-One Image
Restoration via Self-Improved Privilege Learning").

PrivilegeLearning blends the backbone's encoder features of the degraded image with those of the
clean one (Eq. 1) during training, with a weight alpha that decays to 0; at inference alpha = 0.

SIPL keeps the privileged knowledge for inference in a learnable Privileged Dictionary PD per
decoder stage, fused by Proxy Fusion (Eq. 2-4), and refines its own output iteratively
(Eq. 5-7). For PromptIR its parameters and state_dict keys are those of the official
PromptIR_ProxyFusion (decoder=True), whose checkpoints load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pyairir.models.protocol import Encoded
from pyairir.nn import ProxyFusionBlock
from pyairir.paradigms.base import Paradigm, l1


DICTIONARY_STD = 0.02  # SIPL's default dictionary init, N(0, 0.02^2) (the official one is zeros)


@dataclass
class AlphaSchedule:
    """alpha(step), decreasing from `start` at step 0 to 0 at `total_steps` (and after):

    linear: start (1 - t/T);  cosine: start (1 + cos(pi t/T)) / 2;
    step: start (1 - floor(t / (T / drops)) / drops), `drops` equal steps down.
    """

    kind: str = "cosine"
    total_steps: int = 10_000
    start: float = 1.0
    drops: int = 4

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine", "step"):
            raise ValueError(f"AlphaSchedule: kind must be linear, cosine or step, got {self.kind!r}")
        if self.total_steps <= 0 or not 0.0 <= self.start <= 1.0 or self.drops <= 0:
            raise ValueError("AlphaSchedule: total_steps and drops must be positive and start in [0, 1], got "
                             f"{self.total_steps}, {self.drops}, {self.start}")

    def __call__(self, step: int) -> float:
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        if self.kind == "linear":
            return self.start * (1.0 - progress)
        if self.kind == "cosine":
            return self.start * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.start * (1.0 - math.floor(progress * self.drops) / self.drops)


class PrivilegeLearning(Paradigm):
    """F = (1 - alpha) F_d + alpha F_PI at the chosen encoder levels        (SIPL Eq. 1)

    F_PI are the backbone's own encoder features of the clean image, taken without gradient (as
    the official SIPL code takes its privileged features). alpha follows `schedule` over the
    training steps counted by `advance()`; without a clean image, or in eval mode, alpha = 0.
    levels: encoder levels to blend (default: all, i.e. every skip connection and the latent).
    """

    def __init__(self, backbone: nn.Module, schedule: AlphaSchedule | None = None,
                 levels: tuple[str, ...] | None = None) -> None:
        super().__init__(backbone)
        self.schedule = schedule or AlphaSchedule()
        self.levels = tuple(levels or backbone.level_channels())
        unknown = set(self.levels) - set(backbone.level_channels())
        if unknown:
            raise ValueError(f"PrivilegeLearning: unknown levels {sorted(unknown)}; the backbone has "
                             f"{list(backbone.level_channels())}")
        self.steps = 0

    @property
    def alpha(self) -> float:
        return self.schedule(self.steps) if self.training else 0.0

    def advance(self) -> None:
        """Counts one training step (call once per optimiser step)."""
        self.steps += 1

    def forward(self, degraded: torch.Tensor, clean: torch.Tensor | None = None) -> torch.Tensor:
        encoded = self.backbone.encode(degraded)
        alpha = self.alpha
        if clean is not None and alpha > 0:
            with torch.no_grad():
                privileged = self.backbone.encode(clean).levels
            levels = dict(encoded.levels)
            for level in self.levels:
                levels[level] = (1 - alpha) * levels[level] + alpha * privileged[level]
            encoded = Encoded(levels, encoded.image, encoded.size, encoded.extras)
        return self.backbone.decode(encoded)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = l1(self(degraded, clean), clean)
        return {"loss": loss, "l1": loss.detach(), "alpha": torch.tensor(self.alpha)}


class SIPL(Paradigm):
    """Self-Improved Privilege Learning around any backbone.

    At each fused decoder stage k (default: the three deepest; for PromptIR the latent, after
    decoder_level3 and after decoder_level2, numbered 3, 2, 1 as in the official code):

        PD_k in R^{N x C}: `privileged_dictionary{k}` (1, C, s, s), N = s^2 tokens,   (Eq. 2)
        F'_PI = p{k}_cross(Q = PD_k, K = V = F_PI)     (or PD_k itself without F_PI) (Eq. 3)
        F     = cross_p{k}(Q = F_d, K = V = F'_PI)                                   (Eq. 4)

    F_PI are the encoder features, at the stage's level, of a privileged image: in training the
    model's own restoration of the ground truth (the official training step), at inference its
    previous output (Eq. 5-7). The dictionary's spatial size s is that of the stage's features
    for a `train_size` crop (official: 64, 32, 16 for 128 x 128).
    dictionary_init: "normal" (default) draws PD from N(0, 0.02^2); "zeros" is the official init.
    A zero dictionary makes p{k}_cross's queries exactly zero, and the attention's normalisation
    q / max(|q|, 1e-12) then gives PD a first gradient of ~1e7: Adam's second moment keeps that
    for thousands of steps, so the dictionary freezes after its first step (measured by
    benchmarks.learning: every element ended at the same magnitude, 2.07e-3, after 480 steps;
    tests/paradigms/test_sipl.py). The init does not change what a checkpoint loads.
    dictionary_heads / fusion_heads: heads of p{k}_cross / cross_p{k} for k = 1, 2, 3 (official
    (1, 2, 1) and (1, 2, 4) with PromptIR's heads [1, 2, 4, 8]).
    use_random_proxy: blend F'_PI with PD by a random weight per sample (official option).
    """

    def __init__(self, backbone: nn.Module, stages: tuple[str, ...] | None = None, train_size: int = 128,
                 dictionary_heads: tuple[int, ...] = (1, 2, 1), fusion_heads: tuple[int, ...] = (1, 2, 4),
                 ffn_expansion_factor: float = 2.0, bias: bool = False, LayerNorm_type: str = "WithBias",  # noqa: N803
                 use_random_proxy: bool = False, dictionary_init: str = "normal") -> None:
        super().__init__(backbone)
        if dictionary_init not in ("normal", "zeros"):
            raise ValueError(f"SIPL: dictionary_init must be 'normal' or 'zeros', got {dictionary_init!r}")
        self.stages = tuple(stages or self.deepest_stages(3))
        channels = backbone.stage_channels()
        unknown = [s for s in self.stages if s not in channels or s not in backbone.level_channels()]
        if unknown:
            raise ValueError(f"SIPL: stages {unknown} are not both decoder stages and encoder levels of "
                             f"{type(backbone).__name__} (stages {list(channels)})")
        if len(self.stages) > min(len(dictionary_heads), len(fusion_heads)):
            raise ValueError(f"SIPL: give dictionary_heads and fusion_heads for each of the {len(self.stages)} stages")
        self.use_random_proxy = use_random_proxy
        # official numbering: 1 = the shallowest fused stage
        self.index = {stage: len(self.stages) - i for i, stage in enumerate(self.stages)}
        for stage, k in sorted(self.index.items(), key=lambda item: item[1]):
            dim, size = channels[stage], train_size // self.stage_scale(stage)
            if backbone.level_channels()[stage] != dim:
                raise ValueError(f"SIPL: at {stage} the encoder has {backbone.level_channels()[stage]} channels "
                                 f"but the decoder {dim}; privileged features would not fit")
            dictionary = torch.zeros(1, dim, size, size)
            if dictionary_init == "normal":
                nn.init.normal_(dictionary, std=DICTIONARY_STD)
            self.register_parameter(f"privileged_dictionary{k}", nn.Parameter(dictionary))
        for prefix, heads in (("p{}_cross", dictionary_heads), ("cross_p{}", fusion_heads)):
            for stage, k in sorted(self.index.items(), key=lambda item: item[1]):
                self.add_module(prefix.format(k), ProxyFusionBlock(channels[stage], heads[k - 1],
                                                                   ffn_expansion_factor, bias, LayerNorm_type))

    def forward(self, degraded: torch.Tensor, privileged_features: dict[str, torch.Tensor] | None = None,
                proxies: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """degraded (B, 3, H, W) -> restored; privileged_features: {stage: encoder feature}, or None;
        proxies: {stage: F'_PI} computed beforehand (fused_dictionaries), instead of from the features."""
        inject = self._injector(degraded.shape[0], privileged_features, proxies)
        return self.backbone.decode(self.backbone.encode(degraded), inject)

    def _proxy(self, stage: str, batch: int, privileged: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """F'_PI at a stage (Eq. 3): PD_k fused with the privileged features, or PD_k alone without them."""
        k = self.index[stage]
        dictionary = getattr(self, f"privileged_dictionary{k}").repeat(batch, 1, 1, 1)
        if privileged is None:
            return dictionary
        proxy = getattr(self, f"p{k}_cross")(dictionary, privileged[stage])
        if self.use_random_proxy:
            w = torch.rand(batch, 1, 1, 1, device=proxy.device, dtype=proxy.dtype)
            proxy = (1 - w) * proxy + w * dictionary
        return proxy

    def _injector(self, batch: int, privileged: dict[str, torch.Tensor] | None,
                  proxies: dict[str, torch.Tensor] | None = None):
        def inject(stage: str, x: torch.Tensor) -> torch.Tensor:
            if stage not in self.index:
                return x
            proxy = proxies[stage] if proxies is not None else self._proxy(stage, batch, privileged)
            return getattr(self, f"cross_p{self.index[stage]}")(x, proxy)  # Eq. 4

        return inject

    @torch.no_grad()
    def fused_dictionaries(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """{stage: F'_PI (B, C, s, s)}: the dictionaries fused with the privileged features of `image`
        (Eq. 3), each dictionary token attending to every pixel of the image's features. Computed
        once per image, they let the decoder run on tiles with a global dictionary."""
        privileged = self.privileged_features(image, restore=False)
        return {stage: self._proxy(stage, image.shape[0], privileged) for stage in self.stages}

    @torch.no_grad()
    def privileged_features(self, image: torch.Tensor, restore: bool = True) -> dict[str, torch.Tensor]:
        """The encoder features of `image` (first restored by the model itself if `restore`), at the
        fused stages, without gradient."""
        if restore:
            image = self(image)
        levels = self.backbone.encode(image).levels
        return {stage: levels[stage] for stage in self.stages}

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official training step: privileged features of the model's restoration of the ground
        truth (no gradient), then an L1 loss on the guided restoration of the degraded image."""
        loss = l1(self(degraded, self.privileged_features(clean)), clean)
        return {"loss": loss, "l1": loss.detach()}

    @torch.no_grad()
    def refine(self, encoded: Encoded, previous: torch.Tensor) -> torch.Tensor:
        """One step of the paper's loop, I^(t) = F(I_d, I^(t-1)) (Eq. 7), from I_d's encoding
        `encoded` (backbone.encode(I_d), reused across steps) and previous = I^(t-1)."""
        privileged = self.privileged_features(previous, restore=False)
        return self.backbone.decode(encoded, self._injector(previous.shape[0], privileged))

    @torch.no_grad()
    def restore(self, degraded: torch.Tensor, iterations: int = 1, loop: str = "paper",
                guide: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Iterative self-refinement; returns [I^(0), ..., I^(iterations)] (iterations + 1 images).

        loop="paper" (Eq. 5-7): I^(0) = F(I_d), I^(t) = F(I_d, I^(t-1)), the input staying I_d; the
            encoder runs on I_d once, so a refinement costs one encoder pass (of I^(t-1), for its
            privileged features) and one decoder pass.
        loop="official" (the released test loop): I^(0) = F(I_d) and, with x_0 = I_d,
            x_t = F(x_{t-1}, F(x_{t-1})): each refinement restores the previous refinement again.
        guide: a clean image to take the privileged features from instead (the paper's upper
            bound, GT-guided); then the result is [F(I_d), F(I_d, guide)].
        """
        if loop not in ("paper", "official"):
            raise ValueError(f"SIPL.restore: loop must be 'paper' or 'official', got {loop!r}")
        if iterations < 0:
            raise ValueError(f"SIPL.restore: iterations must be >= 0, got {iterations}")
        # The degraded image's encoding is the same in every pass that takes I_d as input: computed once.
        encoded = self.backbone.encode(degraded)
        batch = degraded.shape[0]
        first = self.backbone.decode(encoded, self._injector(batch, None))
        if guide is not None:
            return [first, self.backbone.decode(encoded, self._injector(batch, self.privileged_features(guide)))]
        outputs, current, unguided = [first], degraded, first
        for t in range(iterations):
            if loop == "paper":
                outputs.append(self.refine(encoded, outputs[-1]))
                continue
            current = self(current, self.privileged_features(unguided, restore=False))
            outputs.append(current)
            if t + 1 < iterations:
                unguided = self(current)
        return outputs
