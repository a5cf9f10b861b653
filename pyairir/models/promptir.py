"""PromptIR (Potlapalli et al., NeurIPS 2023), as in the official net/model.py:
same class name, constructor arguments, state_dict keys and computation.

A Restormer U-Net whose decoder is prompted at three levels (decoder=True,
the configuration the PromptIR, SIPL, LUPI and CPL papers train): after the
latent, after decoder level 3 and after decoder level 2, a PromptGenBlock
generates a prompt from the features, the two are concatenated, mixed by a
Transformer block ("noise level" block, heads[2] heads) and reduced by a 1x1
conv. The official channel counts are written there for dim=48
(e.g. `int(dim*2**2) + 512`); here they are derived from dim so that any dim
builds, and they equal the official ones at dim=48.

The official code also holds six 1x1 convs that its forward never uses
(chnl_reduce1-3, reduce_noise_channel_1-3, 215,296 parameters at dim=48);
they are kept, unused, so official checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from pyairir.models.checks import check_model_input
from pyairir.models.protocol import Encoded, Inject, no_injection
from pyairir.models.restormer import transformer_stage
from pyairir.nn import Downsample, OverlapPatchEmbed, PromptGenBlock, TransformerBlock, Upsample
from pyairir.nn.fast import standalone_conv

# Prompt channels at decoder levels 1, 2 and 3 (H/2, H/4, H/8), and the prompt
# components' spatial size, fixed in the official code whatever dim is.
PROMPT_DIMS = (64, 128, 320)
PROMPT_SIZES = (64, 32, 16)
PROMPT_LEN = 5


class PromptIR(nn.Module):
    """(B, inp_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8.

    Only decoder=True runs: with decoder=False the official up4_3 receives the 8*dim-channel
    latent but was built for 4*dim channels. decoder=False builds the official parameters
    (so such a state_dict loads) and its forward raises a ValueError saying so.
    """

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
        decoder: bool = False,
    ) -> None:
        super().__init__()
        self.fast = False  # set by pyairir.nn.set_fast, as on the model's blocks
        self.inp_channels, self.dim = inp_channels, dim
        self.decoder = decoder
        p1, p2, p3 = PROMPT_DIMS

        def stage(n: int, channels: int, level_heads: int) -> nn.Sequential:
            return transformer_stage(n, channels, level_heads, ffn_expansion_factor, bias, LayerNorm_type)

        def noise_block(channels: int) -> TransformerBlock:
            return TransformerBlock(channels, heads[2], ffn_expansion_factor, bias, LayerNorm_type)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        if decoder:
            self.prompt1 = PromptGenBlock(p1, PROMPT_LEN, PROMPT_SIZES[0], lin_dim=dim * 2)
            self.prompt2 = PromptGenBlock(p2, PROMPT_LEN, PROMPT_SIZES[1], lin_dim=dim * 4)
            self.prompt3 = PromptGenBlock(p3, PROMPT_LEN, PROMPT_SIZES[2], lin_dim=dim * 8)
        # Unused by the forward (see the module docstring).
        self.chnl_reduce1 = nn.Conv2d(64, 64, kernel_size=1, bias=bias)
        self.chnl_reduce2 = nn.Conv2d(128, 128, kernel_size=1, bias=bias)
        self.chnl_reduce3 = nn.Conv2d(320, 256, kernel_size=1, bias=bias)
        self.reduce_noise_channel_1 = nn.Conv2d(dim + 64, dim, kernel_size=1, bias=bias)

        self.encoder_level1 = stage(num_blocks[0], dim, heads[0])
        self.down1_2 = Downsample(dim)
        self.reduce_noise_channel_2 = nn.Conv2d(dim * 2 + 128, dim * 2, kernel_size=1, bias=bias)
        self.encoder_level2 = stage(num_blocks[1], dim * 2, heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.reduce_noise_channel_3 = nn.Conv2d(dim * 4 + 256, dim * 4, kernel_size=1, bias=bias)
        self.encoder_level3 = stage(num_blocks[2], dim * 4, heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(num_blocks[3], dim * 8, heads[3])

        # Decoder level 3 (H/4). up4_3 takes the reduced latent (4dim channels, 2dim after the shuffle).
        self.up4_3 = Upsample(dim * 4)
        self.reduce_chan_level3 = nn.Conv2d(dim * 2 + dim * 4, dim * 4, kernel_size=1, bias=bias)
        self.noise_level3 = noise_block(dim * 8 + p3)
        self.reduce_noise_level3 = nn.Conv2d(dim * 8 + p3, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = stage(num_blocks[2], dim * 4, heads[2])

        # Decoder level 2 (H/2).
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.noise_level2 = noise_block(dim * 4 + p2)
        self.reduce_noise_level2 = nn.Conv2d(dim * 4 + p2, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level2 = stage(num_blocks[1], dim * 2, heads[1])

        # Decoder level 1 (H), no 1x1 reduction after the skip concat.
        self.up2_1 = Upsample(dim * 2)
        self.noise_level1 = noise_block(dim * 2 + p1)
        self.reduce_noise_level1 = nn.Conv2d(dim * 2 + p1, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level1 = stage(num_blocks[0], dim * 2, heads[0])
        self.refinement = stage(num_refinement_blocks, dim * 2, heads[0])
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    # The six 1x1 convs the official forward never uses (kept for checkpoint compatibility).
    unused_modules = ("chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1",
                      "reduce_noise_channel_2", "reduce_noise_channel_3")

    def level_channels(self) -> dict[str, int]:
        return {"level1": self.dim, "level2": self.dim * 2, "level3": self.dim * 4, "latent": self.dim * 8}

    def stage_channels(self) -> dict[str, int]:
        return {"latent": self.dim * 8, "level3": self.dim * 4, "level2": self.dim * 2, "level1": self.dim * 2}

    def encode(self, inp_img: torch.Tensor) -> Encoded:
        check_model_input(inp_img, type(self).__name__, self.inp_channels, self.size_multiple)
        if not self.decoder:
            raise ValueError(
                "PromptIR(decoder=False) cannot run: as in the official code, up4_3 is built for the "
                "4*dim-channel prompted latent. Use decoder=True, the configuration the papers train."
            )
        out_enc_level1 = self.encoder_level1(self.patch_embed(inp_img))
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))
        levels = {"level1": out_enc_level1, "level2": out_enc_level2, "level3": out_enc_level3, "latent": latent}
        return Encoded(levels, inp_img, tuple(inp_img.shape[-2:]))

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor:
        """The decoder; at each of the three deepest stages, inject() runs before the prompt."""
        f = encoded.levels
        x = inject("latent", f["latent"])
        x = self.noise_level3(torch.cat([x, self.prompt3(x)], 1))
        x = standalone_conv(self.reduce_noise_level3, x, self.fast)
        x = standalone_conv(self.reduce_chan_level3, torch.cat([self.up4_3(x), f["level3"]], 1), self.fast)
        x = inject("level3", self.decoder_level3(x))
        x = self.noise_level2(torch.cat([x, self.prompt2(x)], 1))
        x = standalone_conv(self.reduce_noise_level2, x, self.fast)
        x = standalone_conv(self.reduce_chan_level2, torch.cat([self.up3_2(x), f["level2"]], 1), self.fast)
        x = inject("level2", self.decoder_level2(x))
        x = self.noise_level1(torch.cat([x, self.prompt1(x)], 1))
        x = standalone_conv(self.reduce_noise_level1, x, self.fast)
        x = inject("level1", self.decoder_level1(torch.cat([self.up2_1(x), f["level1"]], 1)))
        return standalone_conv(self.output, self.refinement(x), self.fast) + encoded.image

    def forward(self, inp_img: torch.Tensor, noise_emb: torch.Tensor | None = None) -> torch.Tensor:
        """noise_emb is accepted and ignored, as in the official code."""
        return self.decode(self.encode(inp_img))

    @staticmethod
    def checkpoint_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps the official Lightning checkpoint (keys of PromptIRModel, prefixed `net.`) to this module's keys."""
        if state_dict and all(k.startswith("net.") for k in state_dict):
            return {k[len("net."):]: v for k, v in state_dict.items()}
        return state_dict
