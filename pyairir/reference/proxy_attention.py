import torch
import torch.nn.functional as F


def proxy_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                    heads: int) -> torch.Tensor:
    """SIPL's Proxy Fusion attention core (SIPL Eq. 3-4), as the official CrossAttention computes it.

    q (B, C, Hq, Wq) attends to k, v (B, C, Hk, Wk) over tokens (pixels): each of the `heads` groups
    of d = C / heads channels gives a d-vector per token, L2-normalised for q and k; per head,
    out = softmax((q̂ k̂^T) * temperature[h]) v, the attention map being (HqWq x HkWk).
    Returns (B, C, Hq, Wq).
    """
    b, c, hq, wq = q.shape

    def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, H*W, d)
        return t.reshape(b, heads, c // heads, -1).transpose(-2, -1)

    q, k = F.normalize(tokens(q), dim=-1), F.normalize(tokens(k), dim=-1)
    attention = ((q @ k.transpose(-2, -1)) * temperature.reshape(1, heads, 1, 1)).softmax(dim=-1)
    return (attention @ tokens(v)).transpose(-2, -1).reshape(b, c, hq, wq)
