"""torch.ops.pyairir.proxy_attention: every face against the eager reference."""

from __future__ import annotations

import pytest
import torch

from pyairir import reference
from pyairir.ops import proxy_attention
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_rows_close,
                               assert_same_for_any_thread_count, exact_copy, run)

# (dtype, atol, rtol) against float64: float32 GEMMs over d <= 176 channels and sums over up to
# ~600 keys (the online softmax rescales the running sums once per key block).
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (5e-5, 5e-5)}


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    return t


def sample_inputs(tiny=False):
    """(q, k, v, temperature, heads): SIPL's two directions (many queries over a small dictionary,
    a dictionary over many keys), channels per head 40, 48, 80, 176, heads 1-8, token counts past
    one CPU block (128 queries, 512 keys) and not multiples of any block; NCHW, channels_last and
    k, v as channel slices of one kv tensor (as CrossAttention's kv.chunk(2) gives)."""
    generator = torch.Generator().manual_seed(0)
    if tiny:
        configs = [(1, 4, 2, (3, 2), (2, 3), "nchw", "nchw"), (2, 6, 3, (2, 2), (1, 3), "cl", "slice")]
    else:
        configs = [  # B, C, heads, (Hq, Wq), (Hk, Wk), q layout, k/v layout
            (1, 176, 1, (13, 11), (5, 6), "nchw", "slice"),  # features over the dictionary, d = 176
            (2, 80, 2, (4, 5), (23, 25), "cl", "cl"),  # dictionary over 575 features, d = 40
            (1, 48, 1, (9, 17), (7, 3), "nchw", "cl"),  # d = 48
            (2, 160, 2, (3, 7), (11, 5), "cl", "slice"),  # d = 80
            (1, 64, 8, (6, 5), (4, 9), "nchw", "nchw"),  # 8 heads
        ]
    for b, c, heads, (hq, wq), (hk, wk), q_layout, kv_layout in configs:
        q = layout(torch.randn(b, c, hq, wq, generator=generator, dtype=torch.float64), q_layout)
        if kv_layout == "slice":
            kv = torch.randn(b, 2 * c, hk, wk, generator=generator, dtype=torch.float64)
            k, v = layout(kv, "cl").chunk(2, dim=1)
        else:
            k, v = (layout(torch.randn(b, c, hk, wk, generator=generator, dtype=torch.float64), kv_layout)
                    for _ in range(2))
        temperature = 0.5 + 2 * torch.rand(heads, 1, 1, generator=generator, dtype=torch.float64)
        yield q, k, v, temperature, heads


def case_id(case):
    q, k, _, _, heads = case
    kind = "slice" if not (k.is_contiguous() or k.is_contiguous(memory_format=torch.channels_last)) else (
        "nchw" if k.is_contiguous() else "cl")
    return f"C{q.shape[1]}-h{heads}-q{q.shape[2]}x{q.shape[3]}-k{k.shape[2]}x{k.shape[3]}-{kind}"


CASES, TINY = list(sample_inputs()), list(sample_inputs(tiny=True))


def grad_for(case):
    return torch.randn(case[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def cast(case, dtype):
    """The case's tensors in dtype, keeping their strides (channel slices stay slices)."""
    return [exact_copy(t, dtype) for t in case[:4]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    op = lambda *args: torch.ops.pyairir.proxy_attention(*args)[0]  # noqa: E731
    got = run(op, cast(case, dtype), (case[4],), grad_for(case))
    expected = run(reference.proxy_attention, list(case[:4]), (case[4],), grad_for(case))
    assert_all_close(got, expected, *TOLERANCES[dtype])
    layout_of_q = torch.channels_last if case[0].stride(1) == 1 else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=layout_of_q)


def test_statistics_are_the_softmax_normaliser_and_norms():
    q, k, v, temperature, heads = CASES[2]
    _, logsumexp, q_norm, k_norm = torch.ops.pyairir.proxy_attention(q, k, v, temperature, heads)
    b, c = q.shape[:2]
    qt = q.reshape(b, heads, c // heads, -1).transpose(-2, -1)
    kt = k.reshape(b, heads, c // heads, -1).transpose(-2, -1)
    torch.testing.assert_close(q_norm, qt.norm(dim=-1))
    torch.testing.assert_close(k_norm, kt.norm(dim=-1))
    scores = (qt / q_norm[..., None]) @ (kt / k_norm[..., None]).transpose(-2, -1) * temperature.reshape(1, heads, 1, 1)
    torch.testing.assert_close(logsumexp, scores.logsumexp(-1))


def test_zero_tokens_follow_normalize():
    """A zero query or key vector (norm below F.normalize's eps) gives the reference's values and gradients."""
    q, k, v, temperature, heads = (t.clone() if isinstance(t, torch.Tensor) else t for t in TINY[0])
    q[:, :, 0, 0] = 0
    k[:, :, 1, 1] = 0
    got = run(lambda *a: torch.ops.pyairir.proxy_attention(*a)[0], [q, k, v, temperature], (heads,), grad_for(TINY[0]))
    expected = run(reference.proxy_attention, [q, k, v, temperature], (heads,), grad_for(TINY[0]))
    assert_all_close(got, expected, 1e-12, 1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:2], ids=[case_id(c) for c in CASES[:2]])
def test_cpu_kernel_low_precision(case, dtype):
    op = lambda *args: torch.ops.pyairir.proxy_attention(*args)[0]  # noqa: E731
    assert_low_precision_rule(op, reference.proxy_attention, list(case[:4]), (case[4],), grad_for(case), dtype)


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    inputs = tuple(exact_copy(t, requires_grad=True) for t in case[:4])
    assert torch.autograd.gradcheck(lambda *a: proxy_attention(*a, case[4]), inputs)


@pytest.mark.parametrize("op", ["proxy_attention", "proxy_attention_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    torch.library.opcheck(getattr(torch.ops.pyairir, op),
                          (*(exact_copy(t, requires_grad=True) for t in case[:4]), case[4]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TINY + CASES[2:4], ids=[case_id(c) for c in TINY + CASES[2:4]])
def test_triton_kernel_matches_reference(case, dtype):
    op = lambda *args: torch.ops.pyairir.proxy_attention_triton(*args)[0]  # noqa: E731
    got = run(op, cast(case, dtype), (case[4],), grad_for(case))
    expected = run(reference.proxy_attention, list(case[:4]), (case[4],), grad_for(case))
    assert_all_close(got, expected, *TOLERANCES[dtype])


@pytest.mark.parametrize("op, case", [("proxy_attention", CASES[0]), ("proxy_attention", CASES[3]),
                                     ("proxy_attention_triton", TINY[1])], ids=["cpu-d176", "cpu-d80-cl", "triton"])
@pytest.mark.parametrize("scale", [1e19, 1e30])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter, before rescaling
def test_huge_tokens_in_float32(op, case, scale):
    """Tokens of q and k so large that their squared norms and scores overflow float32 (1e19:
    squares of 1e38 summed over the channels; 1e30: every product). The reference normalises
    first, in float64; the kernels rescale those tokens by powers of two and must agree, every
    token to its own scale, forward and backward."""
    q, k, v, temperature, heads = case
    q, k = q.clone(), k.clone()
    q[..., :1, :] *= scale
    k[..., -1:, :] *= scale
    tensors = [exact_copy(t, torch.float32) for t in (q, k, v, temperature)]
    got = run(lambda *args: getattr(torch.ops.pyairir, op)(*args)[0], tensors, (heads,), grad_for(case))
    expected = run(reference.proxy_attention, [t.double() for t in tensors], (heads,), grad_for(case))
    assert_rows_close(got, expected, 2e-5, row_dims=(1,))


def test_triton_kernel_bfloat16():
    case = TINY[1]
    op = lambda *args: torch.ops.pyairir.proxy_attention_triton(*args)[0]  # noqa: E731
    assert_low_precision_rule(op, reference.proxy_attention, list(case[:4]), (case[4],), grad_for(case))


def test_deterministic_across_thread_counts():
    q, k, v, temperature = cast(CASES[1], torch.float32)
    heads = CASES[1][4]
    out, logsumexp, q_norm, k_norm = torch.ops.pyairir.proxy_attention(q, k, v, temperature, heads)
    grad = grad_for(CASES[1]).float().contiguous(memory_format=torch.channels_last)
    assert_same_for_any_thread_count(lambda: torch.ops.pyairir.proxy_attention(q, k, v, temperature, heads))
    assert_same_for_any_thread_count(lambda: torch.ops.pyairir.proxy_attention_backward(
        grad, q, k, v, temperature, out, logsumexp, q_norm, k_norm, heads))


Q, KV, T = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 5), torch.ones(2, 1, 1)


@pytest.mark.parametrize("entry", [proxy_attention, torch.ops.pyairir.proxy_attention], ids=["python", "torch.ops"])
@pytest.mark.parametrize("q, k, v, temperature, heads, message", [
    (Q[0], KV, KV, T, 2, r"q must be a 4-D \(B, C, H, W\) tensor"),
    (Q.int(), KV, KV, T, 2, "q must be a floating tensor"),
    (Q[:, :, :0], KV, KV, T, 2, "q must not be empty"),
    (Q, torch.randn(1, 6, 2, 5), KV, T, 2, r"k must have the batch and channels of q \(1, 4\)"),
    (Q, KV, KV[:, :, :1].contiguous(), T, 2, "v must have the shape of k"),
    (Q, KV, KV.double(), T, 2, "must have the dtype and device of q"),
    (Q, KV, KV, T, 3, r"heads must divide the channels of q \(4\), got 3"),
    (Q, KV, KV, torch.ones(3), 2, r"temperature must hold one value per head \(2\)"),
    (Q[:, :, :, :2], KV, KV, T, 2, "q must be NCHW or channels_last, or a channel slice"),
])
def test_bad_input_is_a_clear_error(entry, q, k, v, temperature, heads, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(q, k, v, temperature, heads)
