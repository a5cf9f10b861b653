"""Property-based fuzzing of every op against pyairir.reference (issue 13): random shapes (odd
sizes, H or W = 1, several heads), layouts (NCHW, channels_last, a channel slice of a larger
tensor, a batch broadcast with stride 0), dtypes (float64, float32, bfloat16) and values (scaled
by 1e-30 ... 1e30, with NaN or Inf planted).

The rule: wherever the reference, run in the op's own dtype on the same inputs, is finite, the op
is finite and each element is within the dtype's tolerance (relative to the largest value, plus
the dtype's smallest normal number for results that underflow) of the reference run in float64,
or of the reference in the op's dtype where that dtype's range bends the result too; where that
reference overflows or meets a planted NaN, nothing is asserted.

    PYAIRIR_FUZZ_EXAMPLES=200 pytest tests/ops/test_fuzz.py    # the full run (CI runs 25 per op)
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyairir import ops, reference

EXAMPLES = int(os.environ.get("PYAIRIR_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Relative to the largest value of the float64 reference: float64 differs from it only in
# summation order; float32 and bfloat16 in rounding (bfloat16: 8 bits, through GELU and softmax).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 6e-2}
LAYOUTS = ("nchw", "channels_last", "slice", "broadcast_batch")
# Scales within float32's (and bfloat16's) range. float32 inputs are judged by the float64
# reference, exact for them; float64 inputs whose squares overflow float64 would leave nothing
# exact to judge by (the reference's F.normalize turns them to 0).
SCALES = (1e-30, 1e-3, 1.0, 1e3, 1e30)


def lay_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in `layout`: dense NCHW or channels_last, channels 1..C of a (B, C + 2, H, W)
    tensor, or (for a batch of identical samples) one sample broadcast with batch stride 0."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "slice":
        wider = torch.zeros((t.shape[0], t.shape[1] + 2, *t.shape[2:]), dtype=t.dtype)
        wider[:, 1:-1] = t
        return wider[:, 1:-1]
    if layout == "broadcast_batch":
        return t[:1].expand(t.shape)
    return t.contiguous()


@st.composite
def values(draw, shape, dtype, plant=True):
    """A float64 tensor of `shape` (a fixed random draw, scaled), with NaN or Inf planted maybe."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    scale = draw(st.sampled_from(SCALES))
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    if plant and draw(st.booleans()) and t.numel():
        index = draw(st.integers(0, t.numel() - 1))
        t.view(-1)[index] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    return t


def check(op_out: torch.Tensor, ref_same: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype) -> None:
    finite = torch.isfinite(ref_same) & torch.isfinite(ref64)
    assert op_out.shape == ref64.shape
    got = op_out.double()[finite]
    expected, expected_same = ref64[finite], ref_same.double()[finite]
    if expected.numel() == 0:
        return
    assert torch.isfinite(got).all(), "not finite where the reference is"
    # Results below the dtype's smallest normal number may round to zero (products of 1e-30s).
    allowed = TOLERANCE[dtype] * expected.abs().max().item() + 8 * torch.finfo(dtype).tiny
    # Each element near the float64 result, or near the dtype's own (where its range bends that too:
    # a float32 variance of 1e30s overflows in the reference as in the kernel).
    error = torch.minimum((got - expected).abs(), (got - expected_same).abs()).max().item()
    assert error <= allowed, f"error {error:.3g}, allowed {allowed:.3g} ({TOLERANCE[dtype]} of the largest value)"


def run_both(op, ref, tensors, layouts, rest, dtype):
    """op on the tensors in dtype and their layouts; the reference in dtype and in float64."""
    cast = [lay_out(t.to(dtype), layout) if t is not None else None for t, layout in zip(tensors, layouts)]
    with torch.no_grad():
        out = op(*cast, *rest)
        out = out[0] if isinstance(out, tuple) else out
        same = ref(*cast, *rest)
        exact = ref(*[t.double() if t is not None else None for t in cast], *rest)
    return out, same, exact


DTYPES = st.sampled_from([torch.float64, torch.float32, torch.bfloat16])
SIDES = st.integers(1, 9)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 2), c=st.integers(1, 12), h=SIDES, w=SIDES,
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), subtract_mean=st.booleans())
def test_layer_norm_channels(data, dtype, b, c, h, w, layout, with_bias, subtract_mean):
    x = data.draw(values((b, c, h, w), dtype))
    weight = data.draw(values((c,), dtype, plant=False))
    bias = data.draw(values((c,), dtype, plant=False)) if with_bias else None
    out, same, exact = run_both(ops.layer_norm_channels, reference.layer_norm_channels, [x, weight, bias],
                                [layout, "nchw", "nchw"], (1e-5, subtract_mean), dtype)
    check(out, same, exact, dtype)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 2), heads=st.integers(1, 3), d=st.integers(1, 6), h=SIDES,
       w=SIDES, layout=st.sampled_from(LAYOUTS))
def test_mdta(data, dtype, b, heads, d, h, w, layout):
    q, k, v = (data.draw(values((b, heads * d, h, w), dtype)) for _ in range(3))
    temperature = 0.5 + torch.rand(heads, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    out, same, exact = run_both(ops.mdta, reference.mdta, [q, k, v, temperature], [layout] * 3 + ["nchw"], (heads,),
                                dtype)
    check(out, same, exact, dtype)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 2), heads=st.integers(1, 3), d=st.integers(1, 6),
       hq=SIDES, wq=SIDES, hk=SIDES, wk=SIDES, layout=st.sampled_from(LAYOUTS))
def test_proxy_attention(data, dtype, b, heads, d, hq, wq, hk, wk, layout):
    q = data.draw(values((b, heads * d, hq, wq), dtype))
    k, v = (data.draw(values((b, heads * d, hk, wk), dtype)) for _ in range(2))
    temperature = 0.5 + torch.rand(heads, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    out, same, exact = run_both(ops.proxy_attention, reference.proxy_attention, [q, k, v, temperature],
                                [layout] * 3 + ["nchw"], (heads,), dtype)
    check(out, same, exact, dtype)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 2), hidden=st.integers(1, 10), h=SIDES, w=SIDES,
       layout=st.sampled_from(LAYOUTS), depthwise=st.booleans(), gelu=st.booleans())
def test_gated_gelu(data, dtype, b, hidden, h, w, layout, depthwise, gelu):
    x = data.draw(values((b, 2 * hidden, h, w), dtype))
    weight = data.draw(values((2 * hidden, 1, 3, 3), dtype, plant=False)) if depthwise else None
    bias = data.draw(values((2 * hidden,), dtype, plant=False)) if depthwise else None
    out, same, exact = run_both(ops.gated_gelu, reference.gated_gelu, [x, weight, bias], [layout, "nchw", "nchw"],
                                (gelu,), dtype)
    check(out, same, exact, dtype)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 2), c=st.integers(1, 12), h=SIDES, w=SIDES,
       layout=st.sampled_from(LAYOUTS))
def test_film_gelu(data, dtype, b, c, h, w, layout):
    x = data.draw(values((b, c, h, w), dtype))
    gamma, beta = (data.draw(values((b, c), dtype)) for _ in range(2))
    out, same, exact = run_both(ops.film_gelu, reference.film_gelu, [x, gamma, beta], [layout, "nchw", "nchw"], (),
                                dtype)
    check(out, same, exact, dtype)


@FUZZ
@given(data=st.data(), dtype=DTYPES, b=st.integers(1, 3), n=st.integers(1, 6), c=st.integers(1, 8),
       s=st.integers(1, 6), height=SIDES, width=SIDES, renormalize=st.booleans())
def test_topk_prompt(data, dtype, b, n, c, s, height, width, renormalize):
    k = data.draw(st.integers(1, n))
    logits = data.draw(values((b, n), dtype))
    prompts = data.draw(values((n, c, s, s), dtype))
    # Equal softmax weights may be ranked either way; the reference and the op then differ in which
    # component they take, and both are right: only logits without ties are compared.
    if torch.unique(logits.to(dtype).softmax(1), dim=1).shape[1] < n:
        return
    cast = [logits.to(dtype), prompts.to(dtype)]
    with torch.no_grad():
        out = ops.topk_prompt(*cast, height, width, k, renormalize)[0]
        same = reference.topk_prompt(*cast, height, width, k, renormalize)
        exact = reference.topk_prompt(*[t.double() for t in cast], height, width, k, renormalize)
    check(out, same, exact, dtype)


@pytest.mark.parametrize("name", ["layer_norm_channels", "mdta", "proxy_attention", "gated_gelu", "film_gelu",
                                  "topk_prompt"])
def test_every_op_is_fuzzed(name):
    assert callable(globals()[f"test_{name}"]) and name in dir(ops)
