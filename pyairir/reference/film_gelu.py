import torch
import torch.nn.functional as F


def film_gelu(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """GELU(gamma ⊙ x + beta) (LUPI Eq. 2, inside the Degradation-aware Block), exact erf GELU.

    x (B, C, H, W); gamma, beta (B, C), one value per sample and channel. Returns (B, C, H, W).
    """
    return F.gelu(gamma[:, :, None, None] * x + beta[:, :, None, None])
