"""torch.ops.pyairir.gated_gelu: every face against the eager reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyairir import reference
from pyairir.ops import gated_gelu
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_same_for_any_thread_count,
                               exact_copy, layout_id, run)

# (dtype, atol, rtol) against the float64 reference. float64: summation order of the
# nine taps and erf's last bits. float32: the same in single precision, plus the kernels'
# float erf (|error| <= 3.4e-7, csrc/cpu/gelu.h) on values O(10).
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (5e-6, 5e-6)}


def sample_inputs(dtype=torch.float64, tiny=False):
    """(x, dw_weight, dw_bias, gelu): GDFN shapes (2h = 2 * int(C * 2.66) for C in 40, 48, 80, 176),
    NAFNet's SimpleGate with and without its depthwise conv, odd H and W, both layouts. The last
    shape spans several of the channels_last forward's tiles: its 35 rows in two bands of 18 and 17,
    its 19 columns in two tiles of 10 and 9 in float32 (as wide as the ring allows: 15) and three of
    8, 8 and 3 in float64."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 6, 3, 2), (2, 4, 1, 5)] if tiny else [(1, 212, 7, 9), (2, 254, 5, 3), (1, 424, 3, 11),
                                                         (1, 936, 2, 3), (2, 64, 13, 17), (1, 936, 35, 19)]
    modes = [(True, True, True), (True, False, True), (True, True, False), (False, False, True),
             (False, False, False)]  # (conv, bias, gelu)
    for shape, channels_last, (conv, bias, gelu) in itertools.product(shapes, (False, True), modes):
        c = shape[1]
        x = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = (torch.randn(c, 1, 3, 3, generator=generator, dtype=torch.float64) / 3).to(dtype) if conv else None
        b = (0.1 * torch.randn(c, generator=generator, dtype=torch.float64)).to(dtype) if bias else None
        yield x, weight, b, gelu


def case_id(case):
    x, weight, bias, gelu = case
    parts = [f"{tuple(x.shape)}", layout_id(x), "conv" if weight is not None else "noconv",
             "bias" if bias is not None else "", "gelu" if gelu else "simplegate"]
    return "-".join(p for p in parts if p)


CASES = list(sample_inputs())
TINY = list(sample_inputs(tiny=True))


def grad_for(x):
    b, c, h, w = x.shape
    return torch.randn((b, c // 2, h, w), dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    x, weight, bias, gelu = case
    tensors = [exact_copy(t, dtype) for t in (x, weight, bias)]
    got = run(torch.ops.pyairir.gated_gelu, tensors, (gelu,), grad_for(x))
    expected = run(reference.gated_gelu, [t.double() if t is not None else None for t in tensors], (gelu,),
                   grad_for(x))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[0].is_contiguous(memory_format=torch.channels_last) == (layout_id(x) == "cl")
    assert got[1].stride() == x.stride()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:5], ids=[case_id(c) for c in CASES[:5]])
def test_cpu_kernel_low_precision(case, dtype):
    x, weight, bias, gelu = case
    assert_low_precision_rule(torch.ops.pyairir.gated_gelu, reference.gated_gelu, [x, weight, bias], (gelu,),
                              grad_for(x), dtype)


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    x, weight, bias, gelu = case
    inputs = tuple(exact_copy(t, requires_grad=True) for t in (x, weight, bias) if t is not None)

    def fn(x, weight=None, bias=None):
        return gated_gelu(x, weight, bias, gelu)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("op", ["gated_gelu", "gated_gelu_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    x, weight, bias, gelu = case
    args = tuple(exact_copy(t, requires_grad=True) for t in (x, weight, bias)) + (gelu,)
    torch.library.opcheck(getattr(torch.ops.pyairir, op), args)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TINY + CASES[10:12], ids=[case_id(c) for c in TINY + CASES[10:12]])
def test_triton_kernel_matches_reference(case, dtype):
    """The Triton kernels, run by the Triton interpreter on CPU tensors (tests/conftest.py)."""
    x, weight, bias, gelu = case
    got = run(torch.ops.pyairir.gated_gelu_triton, [exact_copy(t, dtype) for t in (x, weight, bias)], (gelu,),
              grad_for(x))
    expected = run(reference.gated_gelu, [x, weight, bias], (gelu,), grad_for(x))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[1].stride() == x.stride()


def test_triton_kernel_bfloat16():
    x, weight, bias, gelu = TINY[0]
    assert_low_precision_rule(torch.ops.pyairir.gated_gelu_triton, reference.gated_gelu, [x, weight, bias], (gelu,),
                              grad_for(x))


def test_backward_is_deterministic_across_thread_counts():
    x, weight, bias, gelu = CASES[0]
    x, weight, bias = x.float().repeat(2, 1, 4, 3), weight.float(), bias.float()
    grad = grad_for(x).float()
    assert_same_for_any_thread_count(lambda: torch.ops.pyairir.gated_gelu_backward(grad, x, weight, bias, gelu))


X = torch.randn(1, 4, 3, 3)


@pytest.mark.parametrize("entry", [gated_gelu, torch.ops.pyairir.gated_gelu], ids=["python", "torch.ops"])
@pytest.mark.parametrize("x, weight, bias, message", [
    (torch.randn(4, 3, 3), None, None, r"x must be a 4-D \(B, C, H, W\) tensor, got 3-D"),
    (torch.ones(1, 4, 3, 3, dtype=torch.int32), None, None, "x must be a floating tensor"),
    (torch.randn(1, 4, 0, 3), None, None, "x must not be empty"),
    (torch.randn(1, 5, 3, 3), None, None, "x must have an even number of channels.*got 5"),
    (X, torch.randn(4, 1, 5, 5), None, r"dw_weight must have shape .4, 1, 3, 3."),
    (X, torch.randn(4, 1, 3, 3).double(), None, "dw_weight must have the dtype"),
    (X, None, torch.zeros(4), "dw_bias given without dw_weight"),
    (X, torch.randn(4, 1, 3, 3), torch.zeros(3), r"dw_bias must have shape"),
])
def test_bad_input_is_a_clear_error(entry, x, weight, bias, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(x, weight, bias, True)


def test_other_strides_are_copied_by_the_python_entry_and_refused_by_the_op():
    for strided in (torch.randn(1, 4, 3, 5)[:, :, :, 1:4], X[:1].expand(2, 4, 3, 3)):
        expected = reference.gated_gelu(strided.contiguous(), None, None, True)
        torch.testing.assert_close(gated_gelu(strided), expected)
        with pytest.raises(RuntimeError, match="x must be contiguous in NCHW or channels_last"):
            torch.ops.pyairir.gated_gelu(strided, None, None, True)
