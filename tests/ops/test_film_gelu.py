"""torch.ops.pyairir.film_gelu: every face against the eager reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyairir import reference
from pyairir.ops import film_gelu
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_same_for_any_thread_count,
                               exact_copy, layout_id, run)

# (dtype, atol, rtol) against float64: float32 rounding of one FMA, the kernels' float erf
# (|error| <= 3.4e-7, csrc/cpu/gelu.h) and the gamma/beta sums over up to ~200 pixels.
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}


def sample_inputs(tiny=False):
    """(x, gamma, beta): LUPI's decoder channels (96, 192, 384 scaled down) and odd sizes, both layouts."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 2, 3), (1, 5, 1, 1)] if tiny else [(2, 96, 7, 9), (1, 130, 5, 3), (3, 17, 11, 13)]
    for shape, channels_last in itertools.product(shapes, (False, True)):
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        gamma = 1 + 0.5 * torch.randn(shape[:2], generator=generator, dtype=torch.float64)
        beta = 0.5 * torch.randn(shape[:2], generator=generator, dtype=torch.float64)
        yield x, gamma, beta


def case_id(case):
    return f"{tuple(case[0].shape)}-{layout_id(case[0])}"


CASES, TINY = list(sample_inputs()), list(sample_inputs(tiny=True))


def grad_for(x):
    return torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    tensors = [exact_copy(t, dtype) for t in case]
    got = run(torch.ops.pyairir.film_gelu, tensors, (), grad_for(case[0]))
    expected = run(reference.film_gelu, [t.double() for t in tensors], (), grad_for(case[0]))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[0].stride() == case[0].stride() and got[1].stride() == case[0].stride()


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
def test_float32_gelu_over_its_whole_range(channels_last):
    """The float erf of the CPU kernels (csrc/cpu/gelu.h) over z in [-12, 12], through its clamp at
    |z| = 4 sqrt(2): GELU and GELU' within 3.4e-7 |z| / 2 plus float rounding of the float64 truth."""
    z = torch.linspace(-12, 12, 96 * 401, dtype=torch.float64).reshape(1, 96, 401, 1)
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    ones, zeros = torch.ones(1, 96, dtype=torch.float64), torch.zeros(1, 96, dtype=torch.float64)
    grad = torch.ones_like(z)
    got = run(torch.ops.pyairir.film_gelu, [z.float(), ones.float(), zeros.float()], (), grad.float())
    expected = run(reference.film_gelu, [z, ones, zeros], (), grad)
    bound = 3.4e-7 * z.abs() / 2 + 2.5e-7 * expected[0].abs() + 1e-12
    assert ((got[0].double() - expected[0]).abs() <= bound).all()
    derivative_bound = 3.4e-7 / 2 + 1e-6 * (1 + z.abs()) * expected[1].abs()
    assert ((got[1].double() - expected[1]).abs() <= derivative_bound).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:2], ids=[case_id(c) for c in CASES[:2]])
def test_cpu_kernel_low_precision(case, dtype):
    assert_low_precision_rule(torch.ops.pyairir.film_gelu, reference.film_gelu, list(case), (), grad_for(case[0]),
                              dtype)


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    assert torch.autograd.gradcheck(film_gelu, tuple(exact_copy(t, requires_grad=True) for t in case))


@pytest.mark.parametrize("op", ["film_gelu", "film_gelu_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    torch.library.opcheck(getattr(torch.ops.pyairir, op), tuple(exact_copy(t, requires_grad=True) for t in case))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TINY + CASES[:2], ids=[case_id(c) for c in TINY + CASES[:2]])
def test_triton_kernel_matches_reference(case, dtype):
    got = run(torch.ops.pyairir.film_gelu_triton, [exact_copy(t, dtype) for t in case], (), grad_for(case[0]))
    expected = run(reference.film_gelu, list(case), (), grad_for(case[0]))
    assert_all_close(got, expected, *TOLERANCES[dtype])


def test_triton_kernel_bfloat16():
    assert_low_precision_rule(torch.ops.pyairir.film_gelu_triton, reference.film_gelu, list(TINY[0]), (),
                              grad_for(TINY[0][0]))


def test_deterministic_across_thread_counts():
    x, gamma, beta = (t.float() for t in CASES[1])
    grad = grad_for(x).float().contiguous(memory_format=torch.channels_last)  # x is channels_last
    assert_same_for_any_thread_count(lambda: torch.ops.pyairir.film_gelu_backward(grad, x, gamma, beta))


X = torch.randn(2, 4, 3, 3)


@pytest.mark.parametrize("entry", [film_gelu, torch.ops.pyairir.film_gelu], ids=["python", "torch.ops"])
@pytest.mark.parametrize("x, gamma, message", [
    (torch.randn(4, 3, 3), torch.ones(2, 4), r"x must be a 4-D \(B, C, H, W\) tensor"),
    (X.int(), torch.ones(2, 4), "x must be a floating tensor"),
    (X, torch.ones(4), r"gamma must have shape \(2, 4\)|gamma must have shape \[2, 4\]"),
    (X, torch.ones(2, 4).double(), "gamma must have the dtype and device of x|with the dtype and device of x"),
])
def test_bad_input_is_a_clear_error(entry, x, gamma, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(x, gamma, torch.zeros(2, 4))


def test_other_strides_are_copied_by_the_python_entry_and_refused_by_the_op():
    gamma, beta = torch.randn(2, 4), torch.randn(2, 4)
    for strided in (torch.randn(2, 4, 3, 5)[:, :, :, 1:4], X[:1].expand(2, 4, 3, 3)):
        expected = reference.film_gelu(strided.contiguous(), gamma, beta)
        torch.testing.assert_close(film_gelu(strided, gamma, beta), expected)
        with pytest.raises(RuntimeError, match="x must be contiguous in NCHW or channels_last"):
            torch.ops.pyairir.film_gelu(strided, gamma, beta)
