"""The fused ops against the eager computations they replace, at the sizes of a 3x256x256 image's
first level (96 channels, as in PromptIR's and Restormer's decoder level 1 and refinement)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyairir import ops, reference, runtime
from tests import official_like

SIZE = 256


def image(channels, channels_last=False, seed=0):
    x = torch.randn(1, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("variant", ["official", "op NCHW", "op channels_last"])
def test_layer_norm(measure, variant):
    x = image(96, channels_last=variant.endswith("channels_last"))
    weight, bias = torch.randn(96), torch.randn(96)
    if variant == "official":
        norm = official_like.LayerNorm(96, "WithBias")  # to (B, HW, C) tokens and back
        norm.body.weight.data, norm.body.bias.data = weight, bias
        fn = lambda: norm(x)  # noqa: E731
    else:
        fn = lambda: ops.layer_norm_channels(x, weight, bias, 1e-5, True)  # noqa: E731
    with torch.no_grad():
        measure("layer_norm", variant, fn, rounds=20)


def qkv(channels_last: bool, requires_grad: bool = False):
    x = image(3 * 96, channels_last)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("variant", ["eager", "op NCHW", "op channels_last"])
def test_mdta_forward(measure, variant):
    q, k, v = qkv(variant.endswith("channels_last")).chunk(3, dim=1)
    t = torch.ones(1, 1, 1)
    attend = reference.mdta if variant == "eager" else ops.mdta
    with torch.no_grad():
        measure("mdta forward", variant, lambda: attend(q, k, v, t, 1), rounds=10)


@pytest.mark.parametrize("variant", ["eager", "convs + op", "op with the convs fused"])
def test_mdta_inference(measure, variant):
    """MDTA's qkv_dwconv, attention and project_out, channels_last: the eager trio, oneDNN's
    convolutions around the op, and the op convolving chunk by chunk as it streams and folding
    the projection into the attention map (what a fast MDTA runs at inference)."""
    x = qkv(channels_last=True)
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(3 * 96, 1, 3, 3, generator=generator), torch.randn(3 * 96, generator=generator)
    project, t = torch.randn(96, 96, 1, 1, generator=generator) / 10, torch.ones(1, 1, 1)

    def convolved():
        return F.conv2d(x, weight, bias, padding=1, groups=3 * 96).chunk(3, dim=1)

    fns = {"eager": lambda: F.conv2d(reference.mdta(*convolved(), t, 1), project),
           "convs + op": lambda: F.conv2d(ops.mdta(*convolved(), t, 1), project),
           "op with the convs fused": lambda: ops.mdta(*x.chunk(3, dim=1), t, 1, weight, bias, project)}
    with torch.no_grad(), runtime.cached_memory():
        measure("mdta inference", variant, fns[variant], rounds=10)


@pytest.mark.parametrize("variant", ["eager", "op NCHW", "op channels_last"])
def test_mdta_forward_backward(measure, variant):
    """q, k, v as three leaves, so that the time is the attention's, not that of re-assembling
    a qkv gradient (a copy both variants would pay alike)."""
    q, k, v = (t.clone().requires_grad_() for t in qkv(variant.endswith("channels_last")).chunk(3, dim=1))
    t = torch.ones(1, 1, 1, requires_grad=True)
    attend = reference.mdta if variant == "eager" else ops.mdta

    def step():
        for leaf in (q, k, v, t):
            leaf.grad = None
        out = attend(q, k, v, t, 1)
        out.backward(torch.ones_like(out))

    measure("mdta forward+backward", variant, step, rounds=5)


def gdfn_inputs(requires_grad=False):
    x = image(510, channels_last=True).requires_grad_(requires_grad)
    weight = (torch.randn(510, 1, 3, 3) / 3).requires_grad_(requires_grad)
    return x, weight


@pytest.mark.parametrize("variant", ["eager", "op channels_last"])
def test_gated_gelu_forward(measure, variant):
    x, weight = gdfn_inputs()
    if variant == "eager":
        fn = lambda: reference.gated_gelu(x, weight, None, True)  # noqa: E731
    else:
        fn = lambda: ops.gated_gelu(x, weight, None, True)  # noqa: E731
    with torch.no_grad():
        measure("gated_gelu forward", variant, fn, rounds=10)


@pytest.mark.parametrize("variant", ["eager", "op channels_last"])
def test_gated_gelu_forward_backward(measure, variant):
    x, weight = gdfn_inputs(requires_grad=True)
    gate = reference.gated_gelu if variant == "eager" else ops.gated_gelu

    def step():
        out = gate(x, weight, None, True)
        out.backward(torch.ones_like(out))

    measure("gated_gelu forward+backward", variant, step, rounds=5)


def film_inputs(channels_last: bool, requires_grad: bool = False):
    """LUPI's Degradation-aware Block at a 96-channel level: x and per-sample, per-channel gamma, beta."""
    generator = torch.Generator().manual_seed(1)
    gamma, beta = 1 + torch.randn(1, 96, generator=generator), torch.randn(1, 96, generator=generator)
    return [t.requires_grad_(requires_grad) for t in (image(96, channels_last), gamma, beta)]


@pytest.mark.parametrize("variant", ["eager", "op NCHW", "op channels_last"])
def test_film_gelu_forward(measure, variant):
    x, gamma, beta = film_inputs(variant.endswith("channels_last"))
    modulate = reference.film_gelu if variant == "eager" else ops.film_gelu
    with torch.no_grad():
        measure("film_gelu forward", variant, lambda: modulate(x, gamma, beta), rounds=20)


@pytest.mark.parametrize("variant", ["eager", "op channels_last"])
def test_film_gelu_forward_backward(measure, variant):
    x, gamma, beta = film_inputs(True, requires_grad=True)
    modulate = reference.film_gelu if variant == "eager" else ops.film_gelu

    def step():
        out = modulate(x, gamma, beta)
        out.backward(torch.ones_like(out))

    measure("film_gelu forward+backward", variant, step, rounds=10)


def prompt_router(variant: str) -> torch.nn.Module:
    """PromptIR's prompt1 (64 channels, 64x64 components) as the official PromptGenBlock (every
    prompt of the batch-repeated parameter), as CPL's SparsePromptModule with top-1 routing on the
    fused kernel, or as the fast PromptGenBlock (the kernel's dense case, k = n)."""
    from pyairir.nn import PromptGenBlock, SparsePromptModule

    n = 15 if "15" in variant else 5
    torch.manual_seed(0)
    if variant.startswith("official"):
        return official_like.PromptGenBlock(64, prompt_len=n, prompt_size=64, lin_dim=96)
    if variant.startswith("fast PromptGenBlock"):
        return PromptGenBlock(64, prompt_len=n, prompt_size=64, lin_dim=96, fast=True)
    return SparsePromptModule(64, prompt_len=n, prompt_size=64, lin_dim=96, top_k=1, fast=True)


TOPK_VARIANTS = ["official, 5 prompts", "op k=1, 5 prompts", "op k=1, 15 prompts", "fast PromptGenBlock, 5 prompts"]


@pytest.mark.parametrize("variant", TOPK_VARIANTS)
def test_topk_prompt(measure, variant):
    """Routing only (gate logits -> prompt at a 256x256 level, before the shared 3x3 conv)."""
    router = prompt_router(variant)
    logits = torch.randn(1, router.prompt_param.shape[1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        measure("topk_prompt", variant, lambda: router.route(logits, (SIZE, SIZE)), rounds=30)


@pytest.mark.parametrize("variant", TOPK_VARIANTS[:2])
def test_topk_prompt_forward_backward(measure, variant):
    router = prompt_router(variant)
    logits = torch.randn(1, router.prompt_param.shape[1], generator=torch.Generator().manual_seed(2),
                         requires_grad=True)

    def step():
        router.zero_grad(set_to_none=True)
        out = router.route(logits, (SIZE, SIZE))
        out.backward(torch.ones_like(out))

    measure("topk_prompt forward+backward", variant, step, rounds=10)


@pytest.mark.parametrize("variant", ["eager", "op"])
def test_proxy_attention(measure, variant):
    """SIPL's fusion at PromptIR's level 2 for a 512x512 image: 256x256 features over a 64x64 dictionary."""
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(1, 96, SIZE, SIZE, generator=generator)
    k, v = torch.randn(1, 192, 64, 64, generator=generator).chunk(2, dim=1)
    t = torch.ones(1, 1, 1)
    attend = reference.proxy_attention if variant == "eager" else ops.proxy_attention
    with torch.no_grad():
        measure("proxy_attention forward", variant, lambda: attend(q, k, v, t, 1), rounds=3)
