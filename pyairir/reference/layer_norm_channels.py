import torch


def layer_norm_channels(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float, subtract_mean: bool
) -> torch.Tensor:
    """Restormer's LayerNorm over the channels of x (B, C, H, W); returns (B, C, H, W).

    WithBias (subtract_mean=True):  (x - mu) / sqrt(var + eps) * weight + bias
    BiasFree (subtract_mean=False): x / sqrt(var + eps) * weight (+ bias if given)
    with mu and the biased variance var taken over C at each pixel.
    """
    mu = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    centred = x - mu if subtract_mean else x
    y = centred / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y
