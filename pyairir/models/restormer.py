"""Restormer (Zamir et al., CVPR 2022), as in the official
basicsr/models/archs/restormer_arch.py: same class name, constructor
arguments, state_dict keys and computation.

A 4-level U-Net of Transformer blocks (MDTA + GDFN): levels of dim, 2dim,
4dim, 8dim channels at H, H/2, H/4, H/8; skip connections are concatenated
(then reduced by a 1x1 conv at levels 3 and 2); decoder level 1 and the
refinement stage run at 2dim channels; output = conv3x3(features) + input.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir.models.checks import check_model_input
from pyairir.models.protocol import Encoded, Inject, no_injection
from pyairir.nn import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample
from pyairir.nn.fast import standalone_conv


def transformer_stage(n: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool,
                      LayerNorm_type: str) -> nn.Sequential:  # noqa: N803
    """n Transformer blocks in a row (an encoder, decoder, latent or refinement stage)."""
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, LayerNorm_type)
                           for _ in range(n)])


class Restormer(nn.Module):
    """(B, inp_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8."""

    size_multiple = 8  # three 2x downsamplings

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: tuple[int, int, int, int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()
        self.fast = False  # set by pyairir.nn.set_fast, as on the model's blocks
        self.inp_channels, self.dim = inp_channels, dim

        def stage(n: int, channels: int, level_heads: int) -> nn.Sequential:
            return transformer_stage(n, channels, level_heads, ffn_expansion_factor, bias, LayerNorm_type)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = stage(num_blocks[0], dim, heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(num_blocks[1], dim * 2, heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(num_blocks[2], dim * 4, heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(num_blocks[3], dim * 8, heads[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = stage(num_blocks[2], dim * 4, heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = stage(num_blocks[1], dim * 2, heads[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = stage(num_blocks[0], dim * 2, heads[0])
        self.refinement = stage(num_refinement_blocks, dim * 2, heads[0])
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def level_channels(self) -> dict[str, int]:
        return {"level1": self.dim, "level2": self.dim * 2, "level3": self.dim * 4, "latent": self.dim * 8}

    def stage_channels(self) -> dict[str, int]:
        return {"latent": self.dim * 8, "level3": self.dim * 4, "level2": self.dim * 2, "level1": self.dim * 2}

    def encode(self, inp_img: torch.Tensor) -> Encoded:
        check_model_input(inp_img, type(self).__name__, self.inp_channels, self.size_multiple)
        inp_enc_level1 = self.patch_embed(inp_img)
        out_enc_level1 = self.encoder_level1(inp_enc_level1)
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))
        levels = {"level1": out_enc_level1, "level2": out_enc_level2, "level3": out_enc_level3, "latent": latent}
        extras = {"embedding": inp_enc_level1} if self.dual_pixel_task else None
        return Encoded(levels, inp_img, tuple(inp_img.shape[-2:]), extras)

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor:
        f = encoded.levels
        x = inject("latent", f["latent"])
        x = standalone_conv(self.reduce_chan_level3, torch.cat([self.up4_3(x), f["level3"]], 1), self.fast)
        x = inject("level3", self.decoder_level3(x))
        x = standalone_conv(self.reduce_chan_level2, torch.cat([self.up3_2(x), f["level2"]], 1), self.fast)
        x = inject("level2", self.decoder_level2(x))
        x = inject("level1", self.decoder_level1(torch.cat([self.up2_1(x), f["level1"]], 1)))
        x = self.refinement(x)
        if self.dual_pixel_task:
            x = x + standalone_conv(self.skip_conv, encoded.extras["embedding"], self.fast)
            return standalone_conv(self.output, x, self.fast)
        return standalone_conv(self.output, x, self.fast) + encoded.image

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(inp_img))
