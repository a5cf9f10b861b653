"""The hook protocol the backbones implement, so that a paradigm wraps a backbone instead of
forking it (SIPL, LUPI, CPL and Privilege Learning all use only this).

    encoded = backbone.encode(image)            # features at named levels
    image = backbone.decode(encoded, inject)     # inject(stage, x) -> x at each decoder stage

Levels are named "level1" (full resolution) ... "levelK" and "latent" (the bottleneck). The
decoder calls `inject(stage, x)` on its features right after each decoder stage, deepest first
("latent", then "levelK" ... "level1"), before anything else happens at that resolution (for
PromptIR: before its prompt). `forward(image)` is `decode(encode(image), no_injection)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

Inject = Callable[[str, torch.Tensor], torch.Tensor]


def no_injection(stage: str, x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Encoded:
    """What the encoder hands the decoder."""

    levels: dict[str, torch.Tensor]  # encoder features per level, (B, C_level, H_level, W_level)
    image: torch.Tensor  # the input as the decoder's global residual sees it (padded if the backbone pads)
    size: tuple[int, int]  # the input's (H, W), to which the output is cropped
    extras: dict[str, torch.Tensor] | None = None  # backbone-specific (e.g. Restormer's dual-pixel skip)


@runtime_checkable
class Backbone(Protocol):
    size_multiple: int

    def level_channels(self) -> dict[str, int]:
        """Channels of the encoder features per level name."""

    def stage_channels(self) -> dict[str, int]:
        """Channels of the decoder features at each injection stage, deepest first."""

    def encode(self, inp_img: torch.Tensor) -> Encoded: ...

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor: ...
