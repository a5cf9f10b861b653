"""NAFNet (Chen et al., ECCV 2022), as in the official
basicsr/models/archs/NAFNet_arch.py: same class names, constructor arguments,
state_dict keys and computation.

A U-Net of NAFBlocks: `width` channels at full resolution, doubled by each
2x2 stride-2 conv down, halved by each 1x1 conv + PixelShuffle up; skips are
added. The input is zero-padded (right, bottom) to a multiple of
2**len(enc_blk_nums) and the output cropped back, so any size works.
NAFNetLocal is the same network with each block's global average pooling
replaced at test time by a local one (TLSC), as the official GoPro/REDS test
configurations use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir.models.checks import check_model_input
from pyairir.models.protocol import Encoded, Inject, no_injection
from pyairir.nn import LocalAvgPool2d, NAFBlock, output_conv, pointwise
from pyairir.nn.fast import inference_memory, standalone_conv


class NAFNet(nn.Module):
    """(B, img_channel, H, W) -> (B, img_channel, H, W), any H, W."""

    size_multiple = 1  # pads itself

    def __init__(self, img_channel: int = 3, width: int = 16, middle_blk_num: int = 1,
                 enc_blk_nums: tuple[int, ...] = (), dec_blk_nums: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fast = False  # set by pyairir.nn.set_fast, as on the model's blocks
        self.img_channel, self.width = img_channel, width
        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1, bias=True)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def level_channels(self) -> dict[str, int]:
        channels = {f"level{i + 1}": self.width * 2 ** i for i in range(len(self.encoders))}
        return {**channels, "latent": self.width * 2 ** len(self.encoders)}

    def stage_channels(self) -> dict[str, int]:
        levels = len(self.encoders)
        stages = {"latent": self.width * 2 ** levels}
        for i in range(len(self.decoders)):
            stages[f"level{levels - i}"] = self.width * 2 ** (levels - 1 - i)
        return stages

    def encode(self, inp: torch.Tensor) -> Encoded:
        check_model_input(inp, type(self).__name__, self.img_channel)
        size = tuple(inp.shape[-2:])
        inp = self.check_image_size(inp)
        x = standalone_conv(self.intro, inp, self.fast)
        levels = {}
        for i, (encoder, down) in enumerate(zip(self.encoders, self.downs)):
            x = encoder(x)
            levels[f"level{i + 1}"] = x
            x = standalone_conv(down, x, self.fast)
        levels["latent"] = self.middle_blks(x)
        return Encoded(levels, inp, size)

    def decode(self, encoded: Encoded, inject: Inject = no_injection) -> torch.Tensor:
        depth = len(self.encoders)
        x = inject("latent", encoded.levels["latent"])
        for i, (decoder, up) in enumerate(zip(self.decoders, self.ups)):
            level = f"level{depth - i}"
            x = inject(level, decoder(self.upsample(up, x, encoded.levels[level])))
        if self.fast and output_conv.usable(self.ending, x, encoded.image):
            with inference_memory(self.fast):
                x = output_conv.conv(self.ending, x, encoded.image)
        else:
            x = standalone_conv(self.ending, x, self.fast) + encoded.image
        h, w = encoded.size
        return x[:, :, :h, :w]

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(inp))

    def upsample(self, up: nn.Sequential, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """PixelShuffle(conv(x)) + skip, a decoder level's input, up = (conv, PixelShuffle): in fast float32
        inference on CPU one GEMM whose epilogue shuffles and adds (pyairir.nn.pointwise)."""
        conv, shuffle = up
        if (self.fast and pointwise.usable(x) and skip.dtype == x.dtype
                and skip.is_contiguous(memory_format=torch.channels_last)):
            with inference_memory(self.fast):
                return pointwise.conv(conv, x, upscale=shuffle.upscale_factor, residual=skip)
        return shuffle(standalone_conv(conv, x, self.fast)) + skip

    def check_image_size(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pads x (B, C, H, W) right and bottom to multiples of padder_size."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % self.padder_size, 0, -h % self.padder_size))


class NAFNetLocal(NAFNet):
    """NAFNet with Test-time Local Statistics Conversion: every block's global average pool
    becomes a LocalAvgPool2d whose window is 1.5x the size its features had for a
    `train_size` (N, C, H, W) input, the official `base_size = 1.5 * train size`.
    Same parameters and state_dict as NAFNet."""

    def __init__(self, *args, train_size: tuple[int, int, int, int] = (1, 3, 256, 256), fast_imp: bool = False,
                 **kwargs) -> None:
        if fast_imp:
            raise ValueError("NAFNetLocal: fast_imp=True (the official non-equivalent approximation) is not "
                             "supported; the official test configurations use fast_imp=False")
        super().__init__(*args, **kwargs)
        self.train_size = tuple(train_size)
        self.eval()
        _, _, train_h, train_w = train_size
        padded_h, padded_w = train_h + -train_h % self.padder_size, train_w + -train_w % self.padder_size
        base_h, base_w = int(train_h * 1.5), int(train_w * 1.5)

        def localise(blocks: nn.Sequential, scale: int) -> None:
            # A block at `scale` saw (padded_h / scale, padded_w / scale) features in training.
            kernel = (padded_h // scale * base_h // train_h, padded_w // scale * base_w // train_w)
            for block in blocks:
                block.sca[0] = LocalAvgPool2d(kernel)

        for level, encoder in enumerate(self.encoders):
            localise(encoder, 2 ** level)
        localise(self.middle_blks, 2 ** len(self.encoders))
        for level, decoder in enumerate(self.decoders):
            localise(decoder, 2 ** (len(self.encoders) - 1 - level))
