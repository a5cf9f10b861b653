"""A user's own copy of the official code, as accelerate() meets it in the wild and as the
benchmarks time it: the official class and attribute names, state_dict keys and computations
(Restormer's token-layout LayerNorms, MDTA `Attention`, GDFN `FeedForward`, PromptIR's
`PromptGenBlock` mixing every prompt of a batch-repeated parameter, NAFNet's `LayerNorm2d` and
`NAFBlock`, and the whole `Restormer`, `PromptIR` and `NAFNet`), written here in plain PyTorch
from the papers' and the notes' descriptions, in a module pyairir knows nothing about.
tests/test_official_like.py checks that the whole models have the official keys and give the
official outputs. Also a look-alike that must not be touched: SIPL's `DualGate_FeedForward` has
GDFN's parameters but another gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tokens(x):  # (B, C, H, W) -> (B, H*W, C)
    return x.flatten(2).transpose(1, 2)


def image(t, h, w):  # (B, H*W, C) -> (B, C, H, W)
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


class WithBias_LayerNorm(nn.Module):  # noqa: N801
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight + self.bias


class BiasFree_LayerNorm(nn.Module):  # noqa: N801
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight


class LayerNorm(nn.Module):
    def __init__(self, dim, LayerNorm_type):  # noqa: N803
        super().__init__()
        self.body = BiasFree_LayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBias_LayerNorm(dim)

    def forward(self, x):
        h, w = x.shape[-2:]
        return image(self.body(tokens(x)), h, w)


class Attention(nn.Module):
    def __init__(self, dim, num_heads, bias):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, -1, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FeedForward(nn.Module):
    def __init__(self, dim, ffn_expansion_factor, bias):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class DualGate_FeedForward(FeedForward):  # noqa: N801
    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x2) * x1 + F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type, dual_gate=False):  # noqa: N803
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = (DualGate_FeedForward if dual_gate else FeedForward)(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class LayerNorm2d(nn.Module):
    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / (var + self.eps).sqrt() * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Identity()
        self.dropout2 = nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        return y + self.conv5(self.sg(self.conv4(self.norm2(y)))) * self.gamma


class UserNet(nn.Module):
    """A small restoration net built from the blocks above."""

    def __init__(self, dim=16):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.Sequential(
            TransformerBlock(dim, 2, 2.66, False, "WithBias"),
            TransformerBlock(dim, 1, 2.66, True, "BiasFree"),
            TransformerBlock(dim, 2, 2.66, False, "WithBias", dual_gate=True),
            NAFBlock(dim),
        )
        self.out = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x):
        return self.out(self.blocks(self.embed(x))) + x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c=3, embed_dim=48, bias=False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def blocks(n, dim, heads, ffn_expansion_factor, bias, LayerNorm_type):  # noqa: N803
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, LayerNorm_type) for _ in range(n)])


class Restormer(nn.Module):
    def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",  # noqa: N803
                 dual_pixel_task=False):
        super().__init__()
        args = (ffn_expansion_factor, bias, LayerNorm_type)
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = blocks(num_blocks[0], dim, heads[0], *args)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = blocks(num_blocks[1], dim * 2, heads[1], *args)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = blocks(num_blocks[3], dim * 8, heads[3], *args)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = blocks(num_blocks[1], dim * 2, heads[1], *args)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = blocks(num_blocks[0], dim * 2, heads[0], *args)
        self.refinement = blocks(num_refinement_blocks, dim * 2, heads[0], *args)
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, 3, padding=1, bias=bias)

    def forward(self, inp_img):
        inp_enc_level1 = self.patch_embed(inp_img)
        out_enc_level1 = self.encoder_level1(inp_enc_level1)
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))
        x = self.reduce_chan_level3(torch.cat([self.up4_3(latent), out_enc_level3], 1))
        x = self.decoder_level3(x)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), out_enc_level2], 1))
        x = self.decoder_level2(x)
        x = self.decoder_level1(torch.cat([self.up2_1(x), out_enc_level1], 1))
        x = self.refinement(x)
        if self.dual_pixel_task:
            return self.output(x + self.skip_conv(inp_enc_level1))
        return self.output(x) + inp_img


class PromptGenBlock(nn.Module):
    """Every prompt component weighted by the gate's softmax, from the parameter repeated per image."""

    def __init__(self, prompt_dim=128, prompt_len=5, prompt_size=96, lin_dim=192):
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv3x3(self.route(self.linear_layer(x.mean(dim=(-2, -1))), x.shape[-2:]))

    def route(self, logits, size):
        """The official computation from the gate's logits (B, n) to the resized prompt."""
        weights = F.softmax(logits, dim=1)
        prompt = (weights[:, :, None, None, None] * self.prompt_param.repeat(logits.shape[0], 1, 1, 1, 1)).sum(dim=1)
        return F.interpolate(prompt, tuple(size), mode="bilinear")


class PromptIR(nn.Module):
    """decoder=True, the configuration the papers train; the six unused convs are kept."""

    def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",  # noqa: N803
                 decoder=True):
        super().__init__()
        self.decoder = decoder
        self.build(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                   (ffn_expansion_factor, bias, LayerNorm_type), unused_convs=True)

    def build(self, inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, args, unused_convs,
              after_prompts=lambda: None):
        """The layers in the official order; after_prompts adds SIPL's blocks where its class has them."""
        bias = args[1]
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.prompt1 = PromptGenBlock(64, 5, 64, dim * 2)
        self.prompt2 = PromptGenBlock(128, 5, 32, dim * 4)
        self.prompt3 = PromptGenBlock(320, 5, 16, dim * 8)
        after_prompts()
        if unused_convs:
            self.chnl_reduce1 = nn.Conv2d(64, 64, 1, bias=bias)
            self.chnl_reduce2 = nn.Conv2d(128, 128, 1, bias=bias)
            self.chnl_reduce3 = nn.Conv2d(320, 256, 1, bias=bias)
            self.reduce_noise_channel_1 = nn.Conv2d(dim + 64, dim, 1, bias=bias)
        self.encoder_level1 = blocks(num_blocks[0], dim, heads[0], *args)
        self.down1_2 = Downsample(dim)
        if unused_convs:
            self.reduce_noise_channel_2 = nn.Conv2d(dim * 2 + 128, dim * 2, 1, bias=bias)
        self.encoder_level2 = blocks(num_blocks[1], dim * 2, heads[1], *args)
        self.down2_3 = Downsample(dim * 2)
        if unused_convs:
            self.reduce_noise_channel_3 = nn.Conv2d(dim * 4 + 256, dim * 4, 1, bias=bias)
        self.encoder_level3 = blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = blocks(num_blocks[3], dim * 8, heads[3], *args)
        self.up4_3 = Upsample(dim * 4)
        self.reduce_chan_level3 = nn.Conv2d(dim * 2 + dim * 4, dim * 4, 1, bias=bias)
        self.noise_level3 = TransformerBlock(dim * 8 + 320, heads[2], *args)
        self.reduce_noise_level3 = nn.Conv2d(dim * 8 + 320, dim * 4, 1, bias=bias)
        self.decoder_level3 = blocks(num_blocks[2], dim * 4, heads[2], *args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.noise_level2 = TransformerBlock(dim * 4 + 128, heads[2], *args)
        self.reduce_noise_level2 = nn.Conv2d(dim * 4 + 128, dim * 4, 1, bias=bias)
        self.decoder_level2 = blocks(num_blocks[1], dim * 2, heads[1], *args)
        self.up2_1 = Upsample(dim * 2)
        self.noise_level1 = TransformerBlock(dim * 2 + 64, heads[2], *args)
        self.reduce_noise_level1 = nn.Conv2d(dim * 2 + 64, dim * 2, 1, bias=bias)
        self.decoder_level1 = blocks(num_blocks[0], dim * 2, heads[0], *args)
        self.refinement = blocks(num_refinement_blocks, dim * 2, heads[0], *args)
        self.output = nn.Conv2d(dim * 2, out_channels, 3, padding=1, bias=bias)

    def encoder(self, inp_img):
        out_enc_level1 = self.encoder_level1(self.patch_embed(inp_img))
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        return out_enc_level1, out_enc_level2, out_enc_level3, self.latent(self.down3_4(out_enc_level3))

    def run(self, inp_img, fuse=lambda k, x: x):
        """The forward; fuse(k, x) is applied before the prompt at decoder stage k = 3, 2, 1."""
        out_enc_level1, out_enc_level2, out_enc_level3, latent = self.encoder(inp_img)
        latent = fuse(3, latent)
        latent = self.reduce_noise_level3(self.noise_level3(torch.cat([latent, self.prompt3(latent)], 1)))
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), out_enc_level3], 1)))
        x = fuse(2, x)
        x = self.reduce_noise_level2(self.noise_level2(torch.cat([x, self.prompt2(x)], 1)))
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), out_enc_level2], 1)))
        x = fuse(1, x)
        x = self.reduce_noise_level1(self.noise_level1(torch.cat([x, self.prompt1(x)], 1)))
        x = self.decoder_level1(torch.cat([self.up2_1(x), out_enc_level1], 1))
        return self.output(self.refinement(x)) + inp_img

    def forward(self, inp_img):
        return self.run(inp_img)


class CrossAttention_RestormerV2(nn.Module):  # noqa: N801
    """Spatial attention of the query's pixels over the key/value's pixels, cosine scores."""

    def __init__(self, dim, num_heads, bias):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=bias)
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x, y):
        b, c, h, w = x.shape
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(x))
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, -1).transpose(-2, -1) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).transpose(-2, -1).reshape(b, c, h, w))


class CrossTransformerRestormer_Block_PIM(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads, ffn_expansion_factor=2, bias=False, LayerNorm_type="WithBias"):  # noqa: N803
        super().__init__()
        self.norm11 = LayerNorm(dim, LayerNorm_type)
        self.norm12 = LayerNorm(dim, LayerNorm_type)
        self.attn = CrossAttention_RestormerV2(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = DualGate_FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x_q, x_kv):
        x_q = self.norm11(x_q)
        x = x_q + self.attn(x_q, self.norm12(x_kv))
        return x + self.ffn(self.norm2(x))


class PromptIR_ProxyFusion(PromptIR):  # noqa: N801
    """SIPL's model: Privileged Dictionaries fused with privileged features (p{k}_cross), then with
    the decoder's features (cross_p{k}), before each prompt; no unused convs."""

    def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias"):  # noqa: N803
        nn.Module.__init__(self)
        for k, (channels, size) in enumerate([(dim * 2, 64), (dim * 4, 32), (dim * 8, 16)], start=1):
            setattr(self, f"privileged_dictionary{k}", nn.Parameter(torch.zeros(1, channels, size, size)))

        def cross_blocks():
            for prefix, level_heads in (("p{}_cross", (heads[0], heads[1], heads[0])),
                                        ("cross_p{}", (heads[0], heads[1], heads[2]))):
                for k, channels in enumerate([dim * 2, dim * 4, dim * 8], start=1):
                    block = CrossTransformerRestormer_Block_PIM(channels, level_heads[k - 1], 2, bias, LayerNorm_type)
                    setattr(self, prefix.format(k), block)

        self.build(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                   (ffn_expansion_factor, bias, LayerNorm_type), unused_convs=False, after_prompts=cross_blocks)

    def privileged_features(self, image):
        """The official return_feature=True: the encoder features at the fused levels 1, 2, 3."""
        return self.encoder(image)[1:]

    def forward(self, inp_img, privileged_features=None):
        def fuse(k, x):
            dictionary = getattr(self, f"privileged_dictionary{k}").repeat(x.shape[0], 1, 1, 1)
            if privileged_features is not None:
                dictionary = getattr(self, f"p{k}_cross")(dictionary, privileged_features[k - 1])
            return getattr(self, f"cross_p{k}")(x, dictionary)

        return self.run(inp_img, fuse)


class NAFNet(nn.Module):
    def __init__(self, img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=(), dec_blk_nums=()):
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders, self.middle_blks = nn.ModuleList(), nn.ModuleList(), nn.Sequential()
        self.ups, self.downs = nn.ModuleList(), nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp):
        h, w = inp.shape[-2:]
        inp = F.pad(inp, (0, -w % self.padder_size, 0, -h % self.padder_size))
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return (self.ending(x) + inp)[:, :, :h, :w]


class Chanel_Cross_Attention(nn.Module):  # noqa: N801
    """AdaIR's channel (transposed) attention of x's queries over y's keys and values."""

    def __init__(self, dim, num_head, bias):
        super().__init__()
        self.num_head = num_head
        self.temperature = nn.Parameter(torch.ones(num_head, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x, y):
        b, c, h, w = x.shape
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        q, k, v = (t.reshape(b, self.num_head, c // self.num_head, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.spatial(torch.cat([torch.max(x, 1, keepdim=True)[0], x.mean(1, keepdim=True)], 1)))


class ChannelGate(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim // 16, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(dim // 16, dim, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.mlp(self.avg(x)) + self.mlp(self.max(x)))


class FreRefine(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.SpatialGate, self.ChannelGate = SpatialGate(), ChannelGate(dim)  # noqa: N815
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, low, high):
        return self.proj(low * self.SpatialGate(high) + high * self.ChannelGate(low))


class FreModule(nn.Module):
    """The band split as the official code cuts it: a mask sliced per sample, spectrum shifted."""

    def __init__(self, dim, num_heads, bias, in_dim=3):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(in_dim, dim, 3, padding=1, bias=False)
        self.score_gen = nn.Conv2d(2, 2, 7, padding=3)
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = Chanel_Cross_Attention(dim, num_heads, bias)
        self.channel_cross_h = Chanel_Cross_Attention(dim, num_heads, bias)
        self.channel_cross_agg = Chanel_Cross_Attention(dim, num_heads, bias)
        self.frequency_refine = FreRefine(dim)
        self.rate_conv = nn.Sequential(nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(),
                                       nn.Conv2d(dim // 8, 2, 1, bias=False))

    def forward(self, x, y):
        x = F.interpolate(x, y.shape[-2:], mode="bilinear")
        x = self.conv1(x)
        h, w = x.shape[-2:]
        rate = self.rate_conv(F.adaptive_avg_pool2d(x, 1)).sigmoid()
        mask = torch.zeros_like(x)
        for i in range(x.shape[0]):
            dh, dw = int(h // 128 * rate[i, 0]), int(w // 128 * rate[i, 1])
            mask[i, :, h // 2 - dh: h // 2 + dh, w // 2 - dw: w // 2 + dw] = 1
        spectrum = torch.roll(torch.fft.fft2(x, norm="forward"), (h // 2, w // 2), (2, 3))

        def band(m):
            return torch.fft.ifft2(torch.roll(spectrum * m, (-(h // 2), -(w // 2)), (2, 3)), norm="forward").abs()

        high = self.channel_cross_l(band(1 - mask), y)
        low = self.channel_cross_h(band(mask), y)
        out = self.channel_cross_agg(y, self.frequency_refine(low, high))
        return out * self.para1 + y * self.para2


class AdaIR(Restormer):
    """Restormer's layers with a FreModule after the latent and decoder levels 3 and 2."""

    def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",  # noqa: N803
                 decoder=True):
        super().__init__(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type)
        self.decoder = decoder
        if decoder:
            self.fre1 = FreModule(dim * 8, heads[2], bias)
            self.fre2 = FreModule(dim * 4, heads[2], bias)
            self.fre3 = FreModule(dim * 2, heads[2], bias)
            order = ["patch_embed", "fre1", "fre2", "fre3"]  # the official registration order
            self._modules = {name: self._modules[name] for name in order + [n for n in self._modules
                                                                             if n not in order]}

    def forward(self, inp_img):
        out_enc_level1 = self.encoder_level1(self.patch_embed(inp_img))
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        x = self.latent(self.down3_4(out_enc_level3))
        x = self.fre1(inp_img, x) if self.decoder else x
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), out_enc_level3], 1)))
        x = self.fre2(inp_img, x) if self.decoder else x
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), out_enc_level2], 1)))
        x = self.fre3(inp_img, x) if self.decoder else x
        x = self.refinement(self.decoder_level1(torch.cat([self.up2_1(x), out_enc_level1], 1)))
        return self.output(x) + inp_img
