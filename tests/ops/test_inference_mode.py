"""Every op runs under torch.inference_mode, in several threads, as under torch.no_grad.

Under inference_mode the inputs and outputs are inference tensors, which ATen refuses to write
from a thread that is not itself in inference mode: a kernel whose worker threads call ATen ops
(the GEMMs of mdta and proxy_attention) must carry the caller's mode into them."""

from __future__ import annotations

import pytest
import torch

from pyairir import ops


def _inputs(name: str, generator: torch.Generator):
    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    image = rand(2, 16, 33, 70)  # 2 images x 2 heads x 2 chunks of pixels: more tasks than threads
    cases = {
        "layer_norm_channels": lambda: ops.layer_norm_channels(image, rand(16), rand(16)),
        "mdta": lambda: ops.mdta(image, image * 0.5, image.flip(1), rand(2).abs(), 2),
        "gated_gelu": lambda: ops.gated_gelu(image, rand(16, 1, 3, 3), rand(16)),
        "film_gelu": lambda: ops.film_gelu(image, rand(2, 16), rand(2, 16)),
        "proxy_attention": lambda: ops.proxy_attention(image, rand(2, 16, 20, 30), rand(2, 16, 20, 30),
                                                       rand(2).abs(), 2),
        "topk_prompt": lambda: ops.topk_prompt(rand(2, 5), rand(5, 16, 4, 4), 33, 70, 2)[0],
    }
    return cases[name]


@pytest.mark.parametrize("name", ["layer_norm_channels", "mdta", "gated_gelu", "film_gelu", "proxy_attention",
                                  "topk_prompt"])
def test_op_runs_under_inference_mode(name):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            expected = _inputs(name, torch.Generator().manual_seed(0))()
        with torch.inference_mode():
            got = _inputs(name, torch.Generator().manual_seed(0))()
    finally:
        torch.set_num_threads(threads)
    assert got.is_inference()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
