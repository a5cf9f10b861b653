"""VGG16 features (Simonyan & Zisserman), for CPL's perceptual contrastive loss.

torchvision is not a dependency and nothing is downloaded: pass the state_dict of a VGG16 you
have (torchvision's `vgg16` keys `features.N.weight`; pyairir.paradigms.cpl.load_vgg reads one
from a file), or random=True for tests. Layers: relu1_2, relu2_2, relu3_3 (convs up to index 15).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

# torchvision's VGG16 `features` up to relu3_3: conv widths, "M" = 2x2 max pool.
CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256]
OUTPUTS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3"}  # index in `features` of each returned ReLU
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """(B, 3, H, W) in [0, 1] -> {relu1_2, relu2_2, relu3_3} features, frozen, ImageNet-normalised input."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor] | None = None, random: bool = False) -> None:
        super().__init__()
        if state_dict is None and not random:
            raise ValueError("VGGFeatures: give a VGG16 state_dict (pyairir downloads nothing; "
                             "pyairir.paradigms.cpl.load_vgg reads one from a file). random=True builds an "
                             "untrained VGG, for tests only")
        layers: list[nn.Module] = []
        channels = 3
        for item in CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if state_dict is not None:
            missing = [f"features.{k}" for k in self.features.state_dict() if f"features.{k}" not in state_dict]
            if missing:
                raise ValueError(f"VGGFeatures: the state_dict lacks {', '.join(missing[:5])} "
                                 "(expected torchvision's vgg16 keys)")
            self.features.load_state_dict({k: state_dict[f"features.{k}"] for k in self.features.state_dict()})
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # always frozen

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        outputs = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in OUTPUTS:
                outputs[OUTPUTS[index]] = x
        return outputs
