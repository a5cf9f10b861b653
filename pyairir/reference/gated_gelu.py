import torch
import torch.nn.functional as F


def gated_gelu(
    x: torch.Tensor, dw_weight: torch.Tensor | None, dw_bias: torch.Tensor | None, gelu: bool
) -> torch.Tensor:
    """The gate of Restormer's GDFN (Eq. 3) or NAFNet's SimpleGate, optionally after a depthwise conv.

    z = x, or z = DepthwiseConv3x3(x; dw_weight (2h, 1, 3, 3), dw_bias (2h,)) with padding 1;
    with z1, z2 = z.chunk(2, dim=1) of x (B, 2h, H, W), returns (B, h, H, W):
    GELU(z1) * z2 (exact erf GELU) if gelu, else z1 * z2.
    """
    if dw_weight is not None:
        x = F.conv2d(x, dw_weight, dw_bias, padding=1, groups=x.shape[1])
    z1, z2 = x.chunk(2, dim=1)
    return (F.gelu(z1) if gelu else z1) * z2
