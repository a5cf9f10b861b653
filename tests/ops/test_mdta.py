"""torch.ops.pyairir.mdta: every face against the eager reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyairir import reference
from pyairir.ops import mdta
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_rows_close,
                               assert_same_for_any_thread_count, exact_copy, run)

# (dtype, atol, rtol) against the float64 reference. float64: summation order of the
# N-pixel Gram and output products (chunked here, one bmm there). float32: the same in
# single precision, over up to ~600 pixels per chunk and d <= 176 channels.
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}
LAYOUTS = ("nchw", "channels_last", "slice_of_nchw", "slice_of_channels_last")


def make(shape, layout, generator, dtype=torch.float64):
    """q, k, v of `shape` in `layout`: dense, or the chunks of one (B, 3C, H, W) qkv tensor."""
    b, c, h, w = shape
    if layout.startswith("slice"):
        qkv = torch.randn((b, 3 * c, h, w), generator=generator, dtype=torch.float64).to(dtype)
        if layout.endswith("channels_last"):
            qkv = qkv.contiguous(memory_format=torch.channels_last)
        return qkv.chunk(3, dim=1)
    tensors = [torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for _ in range(3)]
    if layout == "channels_last":
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    return tensors


def sample_inputs(tiny=False):
    """(q, k, v, temperature, heads, layout): channels per head 40, 48, 80, 176 (PromptIR's and
    Restormer's), H and W not multiples of any tile or chunk, every layout."""
    generator = torch.Generator().manual_seed(0)
    configs = ([((1, 8, 3, 2), 2), ((2, 4, 1, 3), 1)] if tiny else
               [((1, 160, 7, 9), 4), ((2, 96, 5, 3), 2), ((1, 320, 3, 11), 4), ((1, 704, 4, 3), 4),
                ((1, 48, 47, 53), 1)])  # 2491 pixels: two chunks of the CPU kernel, the second starting mid-row
    for (shape, heads), layout in itertools.product(configs, LAYOUTS):
        q, k, v = make(shape, layout, generator)
        temperature = 0.5 + torch.rand((heads, 1, 1), generator=generator, dtype=torch.float64)
        yield q, k, v, temperature, heads, layout


def case_id(case):
    q, _, _, _, heads, layout = case
    return f"{tuple(q.shape)}-heads{heads}-{layout}"


CASES = list(sample_inputs())
TINY = list(sample_inputs(tiny=True))


def grad_for(q):
    return torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def first(op):
    """The op's output without the tensors it returns for its backward."""
    return lambda *args: op(*args)[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    q, k, v, temperature, heads, layout = case
    tensors = [exact_copy(t, dtype) for t in (q, k, v, temperature)]
    got = run(first(torch.ops.pyairir.mdta), tensors, (heads,), grad_for(q))
    expected = run(reference.mdta, [t.double() for t in tensors], (heads,), grad_for(q))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    channels_last = layout.endswith("channels_last")
    for result in got[:4]:  # the output and grad_q, grad_k, grad_v are dense in q's layout
        assert result.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[::4], ids=[case_id(c) for c in CASES[::4]])
def test_cpu_kernel_low_precision(case, dtype):
    q, k, v, temperature, heads, _ = case
    assert_low_precision_rule(first(torch.ops.pyairir.mdta), reference.mdta, [q, k, v, temperature], (heads,),
                              grad_for(q), dtype)


def test_zero_channel_follows_f_normalize():
    """A channel of q that is all zero has norm 0 < eps: F.normalize leaves it 0 and passes the
    gradient through 1/eps; the kernel must do the same."""
    q, k, v, temperature, heads, _ = CASES[0]
    q = q.clone()
    q[:, 3] = 0
    got = run(first(torch.ops.pyairir.mdta), [q, k, v, temperature], (heads,), grad_for(q))
    expected = run(reference.mdta, [q, k, v, temperature], (heads,), grad_for(q))
    assert_all_close(got, expected, 1e-12, 1e-12)


@pytest.mark.parametrize("op, case", [("mdta", CASES[-1]), ("mdta", CASES[-2]), ("mdta_triton", TINY[1])],
                         ids=["cpu-nchw", "cpu-slice_of_channels_last", "triton"])
@pytest.mark.parametrize("scale", [1e19, 1e30])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter, before rescaling
def test_huge_rows_in_float32(op, case, scale):
    """Channels of q and k so large that their squared norms and Q K^T overflow float32 (1e19:
    squares of 1e38 summed over the pixels; 1e30: every product). The reference normalises
    first, in float64; the kernels rescale those rows by powers of two and must agree, every
    channel to its own scale, forward and backward."""
    q, k, v, temperature, heads, _ = case
    q, k = q.clone(), k.clone()
    q[:, :3] *= scale
    k[:, -2:] *= scale
    tensors = [exact_copy(t, torch.float32) for t in (q, k, v, temperature)]
    got = run(first(getattr(torch.ops.pyairir, op)), tensors, (heads,), grad_for(q))
    expected = run(reference.mdta, [t.double() for t in tensors], (heads,), grad_for(q))
    assert_rows_close(got, expected, 2e-5, row_dims=(2, 3))


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    q, k, v, temperature, heads, _ = case
    inputs = tuple(exact_copy(t, requires_grad=True) for t in (q, k, v, temperature))
    assert torch.autograd.gradcheck(lambda q, k, v, t: mdta(q, k, v, t, heads), inputs)


@pytest.mark.parametrize("op", ["mdta", "mdta_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    q, k, v, temperature, heads, _ = case
    args = tuple(exact_copy(t, requires_grad=True) for t in (q, k, v, temperature)) + (heads,)
    torch.library.opcheck(getattr(torch.ops.pyairir, op), args)


TRITON = TINY + [c for c in CASES if c[0].shape[1] == 160][:2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TRITON, ids=[case_id(c) for c in TRITON])
def test_triton_kernel_matches_reference(case, dtype):
    """The Triton kernels, run by the Triton interpreter on CPU tensors (tests/conftest.py)."""
    q, k, v, temperature, heads, _ = case
    tensors = [exact_copy(t, dtype) for t in (q, k, v, temperature)]
    got = run(first(torch.ops.pyairir.mdta_triton), tensors, (heads,), grad_for(q))
    expected = run(reference.mdta, [q, k, v, temperature], (heads,), grad_for(q))
    assert_all_close(got, expected, *TOLERANCES[dtype])


def test_triton_kernel_bfloat16():
    q, k, v, temperature, heads, _ = TINY[0]
    assert_low_precision_rule(first(torch.ops.pyairir.mdta_triton), reference.mdta, [q, k, v, temperature],
                              (heads,), grad_for(q))


def test_deterministic_across_thread_counts():
    q, k, v, temperature, heads, _ = CASES[-1]  # two chunks
    tensors = [exact_copy(t, torch.float32) for t in (q, k, v, temperature)]
    assert_same_for_any_thread_count(lambda: run(first(torch.ops.pyairir.mdta), tensors, (heads,), grad_for(q)))


# ---------------------------------------------------------------- the fused depthwise filter and the
# folded projection (MDTA's qkv_dwconv and project_out)
# ((1, 48, 47, 53), 1): 2491 pixels, two chunks of the CPU kernel, the second starting mid-row.
FILTERED = [c for c in CASES if c[0].shape[1] in (96, 704)] + [
    (*make((1, 48, 47, 53), layout, torch.Generator().manual_seed(2)),
     torch.full((1, 1, 1), 1.3, dtype=torch.float64), 1, layout)
    for layout in ("slice_of_channels_last", "channels_last")]
# For the fused filter's edge pixels: images one row high (every pixel on the edge) and two columns
# wide (no interior column), 40 channels a head (a partial vector at 8 and 16 lanes).
EDGES = [(*make(shape, layout, torch.Generator().manual_seed(6)), torch.full((1, 1, 1), 0.9, dtype=torch.float64), 1,
          layout) for shape in ((1, 40, 1, 9), (1, 40, 6, 2)) for layout in ("slice_of_channels_last", "channels_last")]


def depthwise_filter(q, bias=True, seed=3):
    """A 3x3 depthwise filter (3C, 1, 3, 3) and bias (3C,) for q, k, v (float64)."""
    generator = torch.Generator().manual_seed(seed)
    c = q.shape[1]
    weight = torch.randn((3 * c, 1, 3, 3), generator=generator, dtype=torch.float64) / 3
    return weight, torch.randn(3 * c, generator=generator, dtype=torch.float64) if bias else None


def projection(q, bias=True, seed=5):
    """A 1x1 convolution (C, C, 1, 1) and bias (C,) of the output (float64)."""
    generator = torch.Generator().manual_seed(seed)
    c = q.shape[1]
    weight = torch.randn((c, c, 1, 1), generator=generator, dtype=torch.float64) / c ** 0.5
    return weight, torch.randn(c, generator=generator, dtype=torch.float64) if bias else None


def projected(op):
    """op(q, k, v, t, heads, dw_weight, dw_bias, project_weight, project_bias)'s output, tensors first."""
    def call(q, k, v, t, w, b, pw, pb, heads):
        out = op(q, k, v, t, heads, w, b, pw, pb)
        return out if op is reference.mdta else out[0]
    return call


def assert_kernel_matches_reference(tensors, heads, layout, dtype):
    """The CPU op on [q, k, v, temperature, dw_weight, dw_bias, project_weight, project_bias] (None for
    an absent one) in `dtype` against the float64 reference: output and every gradient, the output
    dense in q's layout."""
    tensors = [exact_copy(t, dtype) for t in tensors]
    got = run(projected(torch.ops.pyairir.mdta), tensors, (heads,), grad_for(tensors[0]))
    expected = run(projected(reference.mdta), [t if t is None else t.double() for t in tensors], (heads,),
                   grad_for(tensors[0]))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    assert got[0].is_contiguous(memory_format=torch.channels_last if layout.endswith("channels_last")
                                else torch.contiguous_format)


def filtered(op):
    """op with a filter and no projection, tensors first."""
    call = projected(op)
    return lambda q, k, v, t, w, b, heads: call(q, k, v, t, w, b, None, None, heads)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", FILTERED + EDGES, ids=[case_id(c) for c in FILTERED + EDGES])
def test_cpu_kernel_with_filter_matches_reference(case, dtype, bias):
    """q, k, v convolved by the op (fused into its passes for channels_last operands, whole first
    for NCHW ones) against the reference, output and gradients w.r.t. every tensor."""
    q, k, v, temperature, heads, layout = case
    assert_kernel_matches_reference([q, k, v, temperature, *depthwise_filter(q, bias), None, None], heads, layout,
                                    dtype)


@pytest.mark.parametrize("case", FILTERED[1::3], ids=[case_id(c) for c in FILTERED[1::3]])
def test_cpu_kernel_with_filter_low_precision(case):
    q, k, v, temperature, heads, _ = case
    assert_low_precision_rule(filtered(torch.ops.pyairir.mdta), filtered(reference.mdta),
                              [q, k, v, temperature, *depthwise_filter(q)], (heads,), grad_for(q))


@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_huge_rows_with_filter_in_float32(scale):
    """Rows of the convolved q and k that overflow float32: the fused path falls back to
    rescaling the whole convolved operands, and must agree with the reference."""
    q, k, v, temperature, heads, _ = FILTERED[-2]
    q, k = q.clone(), k.clone()
    q[:, :3] *= scale
    k[:, -2:] *= scale
    tensors = [exact_copy(t, torch.float32) for t in (q, k, v, temperature, *depthwise_filter(q))]
    got = run(filtered(torch.ops.pyairir.mdta), tensors, (heads,), grad_for(q))
    expected = run(filtered(reference.mdta), [t.double() for t in tensors], (heads,), grad_for(q))
    assert_rows_close(got[:4], expected[:4], 2e-5, row_dims=(2, 3))


@pytest.mark.parametrize("with_projection", [False, True], ids=["filter", "filter-and-projection"])
def test_filter_deterministic_across_thread_counts(with_projection):
    """The output and the gradients w.r.t. q, k, v and temperature. Not the filter's and the
    projection's gradients: the backward takes them from ATen (the depthwise convolution's
    backward, an einsum), whose sums over the pixels are split by thread (as for nn.Conv2d)."""
    q, k, v, temperature, heads, _ = FILTERED[-2]  # two chunks, fused
    extras = projection(q) if with_projection else (None, None)
    tensors = [exact_copy(t, torch.float32) for t in (q, k, v, temperature, *depthwise_filter(q), *extras)]
    assert_same_for_any_thread_count(
        lambda: run(projected(torch.ops.pyairir.mdta), tensors, (heads,), grad_for(q))[:5])


TINY_FILTERED = [(*make((1, 8, 3, 4), "slice_of_channels_last", torch.Generator().manual_seed(4)),
                  torch.full((2, 1, 1), 0.7, dtype=torch.float64), 2, "slice_of_channels_last"), TINY[1]]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_gradcheck_with_filter(case, bias):
    q, k, v, temperature, heads, _ = case
    inputs = tuple(exact_copy(t, requires_grad=True) for t in (q, k, v, temperature, *depthwise_filter(q, bias))
                   if t is not None)
    assert torch.autograd.gradcheck(lambda q, k, v, t, w, *b: mdta(q, k, v, t, heads, w, *b), inputs)


@pytest.mark.parametrize("op", ["mdta", "mdta_triton"])
@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_opcheck_with_filter(op, case):
    q, k, v, temperature, heads, _ = case
    weight, bias = depthwise_filter(q)
    args = tuple(exact_copy(t, requires_grad=True) for t in (q, k, v, temperature)) + (heads,)
    torch.library.opcheck(getattr(torch.ops.pyairir, op), args + (exact_copy(weight, requires_grad=True),
                                                                  exact_copy(bias, requires_grad=True)))


@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_triton_kernel_with_filter_matches_reference(case):
    q, k, v, temperature, heads, _ = case
    tensors = [q, k, v, temperature, *depthwise_filter(q)]
    got = run(filtered(torch.ops.pyairir.mdta_triton), tensors, (heads,), grad_for(q))
    expected = run(filtered(reference.mdta), tensors, (heads,), grad_for(q))
    assert_all_close(got, expected, *TOLERANCES[torch.float64])


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("with_filter", [True, False], ids=["filter", "no-filter"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", FILTERED, ids=[case_id(c) for c in FILTERED])
def test_cpu_kernel_with_projection_matches_reference(case, dtype, with_filter, bias):
    """project_out folded into the op (P blockdiag(A_h) v + bias), with and without the fused filter,
    against the reference, output and gradients w.r.t. every tensor (the projection's included)."""
    q, k, v, temperature, heads, layout = case
    dw = depthwise_filter(q) if with_filter else (None, None)
    assert_kernel_matches_reference([q, k, v, temperature, *dw, *projection(q, bias)], heads, layout, dtype)


def test_cpu_kernel_with_projection_low_precision():
    q, k, v, temperature, heads, _ = FILTERED[1]
    assert_low_precision_rule(projected(torch.ops.pyairir.mdta), projected(reference.mdta),
                              [q, k, v, temperature, *depthwise_filter(q), *projection(q)], (heads,), grad_for(q))


@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_gradcheck_with_projection(case):
    q, k, v, temperature, heads, _ = case
    inputs = tuple(exact_copy(t, requires_grad=True)
                   for t in (q, k, v, temperature, *depthwise_filter(q), *projection(q)))
    assert torch.autograd.gradcheck(lambda q, k, v, t, w, b, pw, pb: mdta(q, k, v, t, heads, w, b, pw, pb), inputs)


@pytest.mark.parametrize("op", ["mdta", "mdta_triton"])
@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_opcheck_with_projection(op, case):
    q, k, v, temperature, heads, _ = case
    args = tuple(exact_copy(t, requires_grad=True) for t in (q, k, v, temperature)) + (heads,)
    extras = tuple(exact_copy(t, requires_grad=True) for t in (*depthwise_filter(q), *projection(q)))
    torch.library.opcheck(getattr(torch.ops.pyairir, op), args + extras)


@pytest.mark.parametrize("case", TINY_FILTERED, ids=[case_id(c) for c in TINY_FILTERED])
def test_triton_kernel_with_projection_matches_reference(case):
    q, k, v, temperature, heads, _ = case
    tensors = [q, k, v, temperature, *depthwise_filter(q), *projection(q)]
    got = run(projected(torch.ops.pyairir.mdta_triton), tensors, (heads,), grad_for(q))
    expected = run(projected(reference.mdta), tensors, (heads,), grad_for(q))
    assert_all_close(got, expected, *TOLERANCES[torch.float64])


Q = torch.randn(1, 8, 3, 3)
T2 = torch.ones(2, 1, 1)
W24 = torch.randn(24, 1, 3, 3)


@pytest.mark.parametrize("entry", [mdta, torch.ops.pyairir.mdta], ids=["python", "torch.ops"])
@pytest.mark.parametrize("weight, bias, message", [
    (torch.randn(8, 8, 3, 3), None, r"project_weight must have shape \(?\[?8, 8, 1, 1"),
    (torch.randn(8, 8, 1, 1).double(), None, "project_weight must have the dtype"),
    (None, torch.zeros(8), "project_bias given without project_weight"),
    (torch.randn(8, 8, 1, 1), torch.zeros(3), r"project_bias must have shape \(?\[?8"),
])
def test_bad_projection_is_a_clear_error(entry, weight, bias, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(Q, Q, Q, T2, 2, None, None, weight, bias)


@pytest.mark.parametrize("entry", [mdta, torch.ops.pyairir.mdta], ids=["python", "torch.ops"])
@pytest.mark.parametrize("weight, bias, message", [
    (torch.randn(8, 1, 3, 3), None, r"dw_weight must have shape \(?\[?24, 1, 3, 3"),
    (W24.double(), None, "dw_weight must have the dtype"),
    (None, torch.zeros(24), "dw_bias given without dw_weight"),
    (W24, torch.zeros(8), r"dw_bias must have shape \(?\[?24"),
])
def test_bad_filter_is_a_clear_error(entry, weight, bias, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(Q, Q, Q, T2, 2, weight, bias)


@pytest.mark.parametrize("entry", [mdta, torch.ops.pyairir.mdta], ids=["python", "torch.ops"])
@pytest.mark.parametrize("q, k, t, heads, message", [
    (torch.randn(8, 3, 3), torch.randn(8, 3, 3), T2, 2, r"q must be a 4-D \(B, C, H, W\) tensor, got 3-D"),
    (Q.long(), Q.long(), T2, 2, "q must be a floating tensor"),
    (torch.randn(0, 8, 3, 3), torch.randn(0, 8, 3, 3), T2, 2, "q must not be empty"),
    (Q, torch.randn(1, 8, 3, 4), T2, 2, "k must have the shape, dtype and device of q"),
    (Q, Q.double(), T2, 2, "k must have the shape, dtype and device of q"),
    (Q, Q, torch.ones(3, 1, 1), 3, "heads must divide the channels of q"),
    (Q, Q, torch.ones(4, 1, 1), 2, r"temperature must hold one value per head \(2\)"),
    (Q[:, :, :, :2], Q[:, :, :, :2], T2, 2, "q must be NCHW or channels_last, or a channel slice"),
])
def test_bad_input_is_a_clear_error(entry, q, k, t, heads, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(q, k, q, t, heads)
