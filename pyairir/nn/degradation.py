"""LUPI's degradation-prior networks (Learning Privileged Degradation Priors for All-in-One Image
Restoration, Sec. 3.2 and Fig. 3): the privileged estimator D_T, the student predictor D_S and
the FiLM Degradation-aware Block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops
from pyairir.nn.fast import compute_dtype, conv


def degradation_encoder(width: int) -> nn.Sequential:
    """Four 3x3 conv layers from an image (B, 3, H, W) to (B, 8 width, H/8, W/8)."""
    channels = [3, width, 2 * width, 4 * width, 8 * width]
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(channels[i], channels[i + 1], kernel_size=3, stride=2 if i < 3 else 1, padding=1),
                   nn.GELU()]
    return nn.Sequential(*layers)


def prior_head(features: int, prior_dim: int) -> nn.Sequential:
    """Average pooling then a two-layer MLP: (B, features, h, w) -> (B, prior_dim)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, prior_dim), nn.GELU(),
                         nn.Linear(prior_dim, prior_dim))


class PrivilegedEstimator(nn.Module):
    """D_T(I_d, I_c) -> d_T in R^prior_dim: a Siamese encoder shared by the degraded and the clean
    image (4 conv layers to H/8), their features concatenated, a 3x3 fusion conv, average
    pooling and an MLP (LUPI Fig. 3a; prior_dim = 8C = 512 in the paper)."""

    def __init__(self, prior_dim: int = 512, width: int = 64) -> None:
        super().__init__()
        self.encoder = degradation_encoder(width)
        self.fusion = nn.Sequential(nn.Conv2d(16 * width, 8 * width, kernel_size=3, padding=1), nn.GELU())
        self.head = prior_head(8 * width, prior_dim)

    def forward(self, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) twice -> (B, prior_dim)."""
        return self.head(self.fusion(torch.cat([self.encoder(degraded), self.encoder(clean)], dim=1)))


class DegradationPredictor(nn.Module):
    """D_S(I_d) -> d_S in R^prior_dim: one branch of the teacher (its own weights), average
    pooling and an MLP (LUPI Fig. 3b)."""

    def __init__(self, prior_dim: int = 512, width: int = 64) -> None:
        super().__init__()
        self.encoder = degradation_encoder(width)
        self.head = prior_head(8 * width, prior_dim)

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(degraded))


class DegradationAwareBlock(nn.Module):
    """F' = F + Conv3x3(GELU(γ ⊙ F + β)),  [γ, β] = MLP(d)        (LUPI Eq. 1-2)

    γ, β per sample and channel. The 3x3 conv starts at zero, so the block starts as the identity
    and the backbone's behaviour is unchanged until the prior has learnt something.
    forward: F (B, C, H, W), d (B, prior_dim) -> (B, C, H, W).
    fast: the modulation and GELU in one pass (pyairir.ops.film_gelu).
    """

    def __init__(self, channels: int, prior_dim: int = 512, fast: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(prior_dim, prior_dim), nn.GELU(), nn.Linear(prior_dim, 2 * channels))
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.fast = fast

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(prior).to(x.dtype).chunk(2, dim=1)  # (B, C) each
        if self.fast:  # a bf16 x computes in float32 where the CPU has no bf16 arithmetic (compute_dtype)
            dtype = compute_dtype(self.fast, x)
            modulated = ops.film_gelu(x.to(dtype), gamma.to(dtype).contiguous(), beta.to(dtype).contiguous())
            return x + conv(self.conv, modulated).to(x.dtype)
        return x + self.conv(F.gelu(gamma[:, :, None, None] * x + beta[:, :, None, None]))
