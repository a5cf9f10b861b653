"""AdaIR (Cui et al., ICLR 2025), as in the official c-yn/AdaIR net/model.py (MIT licence): same
class name, constructor arguments, state_dict keys and computation.

A Restormer U-Net whose decoder is modulated in frequency at three levels (decoder=True, the
configuration the paper trains): after the latent, after decoder level 3 and after decoder level
2, a FreModule (pyairir.nn.frequency) mines the input image's spectrum and lets the decoder
features attend to its bands. Every FreModule has heads[2] heads, whatever its level, as in the
official code. With decoder=False it is a Restormer under AdaIR's names.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir.models.checks import check_model_input
from pyairir.models.protocol import Encoded, Inject, no_injection
from pyairir.models.restormer import transformer_stage
from pyairir.nn import Downsample, OverlapPatchEmbed, Upsample
from pyairir.nn.frequency import FreModule


class AdaIR(nn.Module):
    """(B, inp_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8."""

    size_multiple = 8

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
        decoder: bool = True,
    ) -> None:
        super().__init__()
        self.inp_channels, self.dim, self.decoder = inp_channels, dim, decoder

        def stage(n: int, channels: int, level_heads: int) -> nn.Sequential:
            return transformer_stage(n, channels, level_heads, ffn_expansion_factor, bias, LayerNorm_type)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        if decoder:
            self.fre1 = FreModule(dim * 8, heads[2], bias, in_dim=inp_channels)
            self.fre2 = FreModule(dim * 4, heads[2], bias, in_dim=inp_channels)
            self.fre3 = FreModule(dim * 2, heads[2], bias, in_dim=inp_channels)
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
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def level_channels(self) -> dict[str, int]:
        return {"level1": self.dim, "level2": self.dim * 2, "level3": self.dim * 4, "latent": self.dim * 8}

    def stage_channels(self) -> dict[str, int]:
        return {"latent": self.dim * 8, "level3": self.dim * 4, "level2": self.dim * 2, "level1": self.dim * 2}

    def encode(self, inp_img: torch.Tensor) -> Encoded:
        check_model_input(inp_img, type(self).__name__, self.inp_channels, self.size_multiple)
        out_enc_level1 = self.encoder_level1(self.patch_embed(inp_img))
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))
        levels = {"level1": out_enc_level1, "level2": out_enc_level2, "level3": out_enc_level3, "latent": latent}
        return Encoded(levels, inp_img, tuple(inp_img.shape[-2:]))

    def modulate(self, module: str, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return getattr(self, module)(image, x) if self.decoder else x

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor:
        """The decoder; at each of the three deepest stages, inject() runs before the FreModule."""
        f, image = encoded.levels, encoded.image
        x = self.modulate("fre1", inject("latent", f["latent"]), image)
        x = self.reduce_chan_level3(torch.cat([self.up4_3(x), f["level3"]], 1))
        x = self.modulate("fre2", inject("level3", self.decoder_level3(x)), image)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), f["level2"]], 1))
        x = self.modulate("fre3", inject("level2", self.decoder_level2(x)), image)
        x = inject("level1", self.decoder_level1(torch.cat([self.up2_1(x), f["level1"]], 1)))
        return self.output(self.refinement(x)) + image

    def forward(self, inp_img: torch.Tensor, noise_emb: torch.Tensor | None = None) -> torch.Tensor:
        """noise_emb is accepted and ignored, as in the official code."""
        return self.decode(self.encode(inp_img))
