import torch
import torch.nn.functional as F


def mdta(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int) -> torch.Tensor:
    """Restormer's transposed attention core (Restormer Eq. 2), as the official Attention.forward computes it.

    q, k, v (B, C, H, W) are split into `heads` groups of d = C / heads channels over the N = H * W
    pixels; q and k are L2-normalised over the pixels; per head,
    out = softmax((q̂ k̂^T) * temperature[h]) v, the attention map being (d x d). Returns (B, C, H, W).
    """
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attention = ((q @ k.transpose(-2, -1)) * temperature.reshape(1, heads, 1, 1)).softmax(dim=-1)
    return (attention @ v).reshape(b, c, h, w)
