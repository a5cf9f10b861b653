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

from pyairir.models.protocol import Encoded, Inject, no_injection
from pyairir.models.restormer import Restormer
from pyairir.nn.fast import standalone_conv
from pyairir.nn.frequency import FreModule


class AdaIR(Restormer):
    """(B, inp_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8: Restormer's
    layers (its encoder is used as it is) and three FreModules in the decoder."""

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
        super().__init__(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type)
        self.decoder = decoder
        if decoder:
            self.fre1 = FreModule(dim * 8, heads[2], bias, in_dim=inp_channels)
            self.fre2 = FreModule(dim * 4, heads[2], bias, in_dim=inp_channels)
            self.fre3 = FreModule(dim * 2, heads[2], bias, in_dim=inp_channels)
            # the official registration order, hence state_dict order: the FreModules right after patch_embed
            first = ("patch_embed", "fre1", "fre2", "fre3")
            order = (*first, *(name for name in self._modules if name not in first))
            self._modules = {name: self._modules[name] for name in order}

    def modulate(self, module: str, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return getattr(self, module)(image, x) if self.decoder else x

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor:
        """The decoder; at each of the three deepest stages, inject() runs before the FreModule."""
        f, image = encoded.levels, encoded.image
        x = self.modulate("fre1", inject("latent", f["latent"]), image)
        x = standalone_conv(self.reduce_chan_level3, torch.cat([self.up4_3(x), f["level3"]], 1), self.fast)
        x = self.modulate("fre2", inject("level3", self.decoder_level3(x)), image)
        x = standalone_conv(self.reduce_chan_level2, torch.cat([self.up3_2(x), f["level2"]], 1), self.fast)
        x = self.modulate("fre3", inject("level2", self.decoder_level2(x)), image)
        x = inject("level1", self.decoder_level1(torch.cat([self.up2_1(x), f["level1"]], 1)))
        return standalone_conv(self.output, self.refinement(x), self.fast) + image

    def forward(self, inp_img: torch.Tensor, noise_emb: torch.Tensor | None = None) -> torch.Tensor:
        """noise_emb is accepted and ignored, as in the official code."""
        return self.decode(self.encode(inp_img))
