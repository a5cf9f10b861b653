"""torch.ops.pyairir.layer_norm_channels: every face against the eager reference."""

from __future__ import annotations

import itertools

import pytest
import torch

import pyairir
from pyairir import reference
from pyairir.ops import layer_norm_channels, use_backend
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_same_for_any_thread_count,
                               exact_copy, layout_id, run)

EPS = 1e-5

# (dtype, atol, rtol) for a kernel against the float64 reference. float64: the
# only error is summation order over C (<= 176 terms). float32: rounding of the
# per-pixel mean/variance and of the output (~1e-7 relative per operation, with
# outputs O(1) and inputs up to ~4 sigma). bfloat16 and float16 are judged by the rule in
# tests.ops.helpers.assert_low_precision_rule instead: their own rounding dwarfs the kernel's.
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}


def sample_inputs(dtype: torch.dtype = torch.float64, tiny: bool = False):
    """(x, weight, bias, subtract_mean) cases: the channel counts per head of the backbones
    (40, 48, 80, 176), H and W not multiples of any tile, both layouts, with and without bias."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 5, 3, 2), (2, 3, 1, 4)] if tiny else [(2, 40, 7, 9), (1, 48, 13, 5), (1, 80, 3, 11), (2, 176, 5, 3)]
    for shape, channels_last, subtract_mean in itertools.product(shapes, (False, True), (True, False)):
        c = shape[1]
        x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 0.5).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = (1 + 0.3 * torch.randn(c, generator=generator, dtype=torch.float64)).to(dtype)
        bias = (0.3 * torch.randn(c, generator=generator, dtype=torch.float64)).to(dtype) if subtract_mean else None
        yield x, weight, bias, subtract_mean


def case_id(case):
    x, _, bias, subtract_mean = case
    return f"{tuple(x.shape)}-{layout_id(x)}-{'withbias' if subtract_mean else 'biasfree'}"


CASES = list(sample_inputs())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    x, weight, bias, subtract_mean = case
    tensors = [exact_copy(t, dtype) for t in (x, weight, bias)]
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = run(reference.layer_norm_channels, [t.double() if t is not None else None for t in tensors],
                   (EPS, subtract_mean), grad_out)
    got = run(torch.ops.pyairir.layer_norm_channels, tensors, (EPS, subtract_mean), grad_out)
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[0].is_contiguous(memory_format=torch.channels_last) == (layout_id(x) == "cl")
    assert got[1].stride() == x.stride()  # grad_x in x's layout


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:4], ids=[case_id(c) for c in CASES[:4]])
def test_cpu_kernel_low_precision(case, dtype):
    x, weight, bias, subtract_mean = case
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert_low_precision_rule(torch.ops.pyairir.layer_norm_channels, reference.layer_norm_channels,
                              [x, weight, bias], (EPS, subtract_mean), grad_out, dtype)


TINY = list(sample_inputs(tiny=True))


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    x, weight, bias, subtract_mean = case
    inputs = tuple(exact_copy(t, requires_grad=True) for t in (x, weight) + ((bias,) if bias is not None else ()))

    def fn(x, weight, bias=None):
        return layer_norm_channels(x, weight, bias, EPS, subtract_mean)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("op", ["layer_norm_channels", "layer_norm_channels_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    x, weight, bias, subtract_mean = case
    args = (*(exact_copy(t, requires_grad=True) for t in (x, weight, bias)), EPS, subtract_mean)
    torch.library.opcheck(getattr(torch.ops.pyairir, op), args)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TINY + CASES[:2], ids=[case_id(c) for c in TINY + CASES[:2]])
def test_triton_kernel_matches_reference(case, dtype):
    """The Triton kernels, run by the Triton interpreter on CPU tensors (tests/conftest.py)."""
    x, weight, bias, subtract_mean = case
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = run(reference.layer_norm_channels, [x, weight, bias], (EPS, subtract_mean), grad_out)
    got = run(torch.ops.pyairir.layer_norm_channels_triton, [exact_copy(t, dtype) for t in (x, weight, bias)],
              (EPS, subtract_mean), grad_out)
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[0].stride() == x.stride()


def test_triton_kernel_bfloat16():
    x, weight, bias, subtract_mean = TINY[0]
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert_low_precision_rule(torch.ops.pyairir.layer_norm_channels_triton, reference.layer_norm_channels,
                              [x, weight, bias], (EPS, subtract_mean), grad_out)


def test_backward_is_deterministic_across_thread_counts():
    x, weight, bias, subtract_mean = CASES[0]
    x = x.repeat(4, 1, 3, 3).float()  # enough pixels for many tasks
    grad_out = torch.randn_like(x)
    assert_same_for_any_thread_count(
        lambda: torch.ops.pyairir.layer_norm_channels_backward(grad_out, x, weight.float(), EPS, True))


def test_python_entry_follows_backend():
    x, weight, bias, subtract_mean = CASES[0]
    with use_backend("reference"):
        assert pyairir.ops.get_backend() == "reference"
        y = layer_norm_channels(x, weight, bias, EPS, subtract_mean)
    torch.testing.assert_close(y, reference.layer_norm_channels(x, weight, bias, EPS, subtract_mean), atol=0, rtol=0)
    with pytest.raises(ValueError, match="PYAIRIR_BACKEND must be one of"):
        with use_backend("gpu"):
            pass


GOOD = (torch.randn(2, 4, 3, 3), torch.ones(4), torch.zeros(4))


@pytest.mark.parametrize("entry", [layer_norm_channels, torch.ops.pyairir.layer_norm_channels],
                         ids=["python", "torch.ops"])
@pytest.mark.parametrize("x, weight, bias, message", [
    (torch.randn(4, 3, 3), GOOD[1], GOOD[2], r"x must be a 4-D \(B, C, H, W\) tensor, got 3-D"),
    (torch.ones(2, 4, 3, 3, dtype=torch.int64), GOOD[1], GOOD[2], "x must be a floating tensor.*Long|int64"),
    (torch.randn(0, 4, 3, 3), GOOD[1], GOOD[2], "x must not be empty"),
    (GOOD[0], torch.ones(5), GOOD[2], r"weight must have shape \(4,\)|weight must have shape \[4\]"),
    (GOOD[0], GOOD[1], torch.zeros(3), r"bias must have shape \(4,\)|bias must have shape \[4\]"),
    (GOOD[0], GOOD[1].double(), GOOD[2], "weight must have the dtype of x"),
])
def test_bad_input_is_a_clear_error(entry, x, weight, bias, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(x, weight, bias, EPS, True)


def test_other_strides_are_copied_by_the_python_entry_and_refused_by_the_op():
    x, weight, bias = GOOD
    wide = torch.randn(2, 4, 3, 5)[:, :, :, 1:4]  # a column slice: neither NCHW- nor channels_last-dense
    broadcast = x[:1].expand(2, 4, 3, 3)
    for strided in (wide, broadcast):
        expected = reference.layer_norm_channels(strided.contiguous(), weight, bias, 1e-5, True)
        torch.testing.assert_close(layer_norm_channels(strided, weight, bias), expected)
        with pytest.raises(RuntimeError, match="x must be contiguous in NCHW or channels_last"):
            torch.ops.pyairir.layer_norm_channels(strided, weight, bias, 1e-5, True)
