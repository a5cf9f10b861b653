"""torch.ops.pyairir.topk_prompt: every face against the eager reference."""

from __future__ import annotations

import pytest
import torch

from pyairir import reference
from pyairir.ops import topk_prompt
from tests.ops.helpers import (assert_all_close, assert_low_precision_rule, assert_same_for_any_thread_count,
                               exact_copy, run)

# (dtype, atol, rtol) against float64: float32 sums of k weighted taps and of the resize's adjoint
# over up to ~40 output pixels per prompt cell.
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}


def sample_inputs(tiny=False):
    """(logits, prompts, height, width, k, renormalize): PromptIR's levels scaled down (5
    components upsampled), CPL's sparse case (k < n, 15 components), downsampling, odd sizes."""
    generator = torch.Generator().manual_seed(0)
    if tiny:
        configs = [(2, 3, 2, 3, 5, 4, 2, True), (1, 2, 1, 2, 3, 3, 2, False)]
    else:
        configs = [  # B, n, C, s, H, W, k, renormalize
            (2, 5, 16, 8, 32, 24, 5, False),  # PromptIR's dense prompt
            (3, 15, 8, 7, 13, 9, 1, True),  # CPL top-1, non-integer scale
            (2, 15, 6, 5, 19, 11, 3, True),
            (2, 6, 4, 16, 5, 11, 2, False),  # downsampling
            (1, 4, 3, 1, 3, 2, 4, True),  # one-pixel components
        ]
    for b, n, c, s, h, w, k, renormalize in configs:
        logits = 2 * torch.randn(b, n, generator=generator, dtype=torch.float64)
        prompts = torch.randn(n, c, s, s, generator=generator, dtype=torch.float64)
        yield logits, prompts, h, w, k, renormalize


def case_id(case):
    logits, prompts, h, w, k, renormalize = case
    return f"B{logits.shape[0]}-n{prompts.shape[0]}-s{prompts.shape[2]}-{h}x{w}-k{k}{'-renorm' if renormalize else ''}"


CASES, TINY = list(sample_inputs()), list(sample_inputs(tiny=True))


def grad_for(case):
    logits, prompts, h, w = case[:4]
    shape = (logits.shape[0], prompts.shape[1], h, w)
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def first(op):
    return lambda *args: op(*args)[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_cpu_kernel_matches_reference(case, dtype):
    tensors, rest = [exact_copy(t, dtype) for t in case[:2]], case[2:]
    got = run(first(torch.ops.pyairir.topk_prompt), tensors, rest, grad_for(case))
    expected = run(reference.topk_prompt, [t.double() for t in tensors], rest, grad_for(case))
    assert_all_close(got, expected, *TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:2], ids=[case_id(c) for c in CASES[:2]])
def test_cpu_kernel_low_precision(case, dtype):
    assert_low_precision_rule(first(torch.ops.pyairir.topk_prompt), reference.topk_prompt, list(case[:2]), case[2:],
                              grad_for(case), dtype)


def test_weights_selection_and_sparse_gradient():
    logits, prompts, h, w, k, renormalize = CASES[2]
    out, weights, selection = torch.ops.pyairir.topk_prompt(logits, prompts, h, w, k, renormalize)
    expected_weights, expected_selection = logits.softmax(1).topk(k, 1)
    assert torch.equal(selection, expected_selection)
    torch.testing.assert_close(weights, expected_weights / expected_weights.sum(1, keepdim=True))
    grad_logits, grad_prompts = torch.ops.pyairir.topk_prompt_backward(grad_for(CASES[2]), logits, prompts, k,
                                                                       renormalize)
    unselected = torch.ones(prompts.shape[0], dtype=torch.bool)
    unselected[selection.flatten()] = False
    assert unselected.any() and grad_prompts[unselected].abs().max() == 0
    assert grad_prompts[~unselected].abs().amin(dim=(1, 2, 3)).gt(0).all()


@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_gradcheck(case):
    logits, prompts = (exact_copy(t, requires_grad=True) for t in case[:2])
    assert torch.autograd.gradcheck(lambda a, b: topk_prompt(a, b, *case[2:])[0], (logits, prompts))


@pytest.mark.parametrize("op", ["topk_prompt", "topk_prompt_triton"])
@pytest.mark.parametrize("case", TINY, ids=[case_id(c) for c in TINY])
def test_opcheck(op, case):
    torch.library.opcheck(getattr(torch.ops.pyairir, op), (*(exact_copy(t, requires_grad=True) for t in case[:2]),
                                                           *case[2:]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", TINY + CASES[1:4], ids=[case_id(c) for c in TINY + CASES[1:4]])
def test_triton_kernel_matches_reference(case, dtype):
    got = run(first(torch.ops.pyairir.topk_prompt_triton), [exact_copy(t, dtype) for t in case[:2]], case[2:],
              grad_for(case))
    expected = run(reference.topk_prompt, list(case[:2]), case[2:], grad_for(case))
    assert_all_close(got, expected, *TOLERANCES[dtype])


def test_triton_kernel_bfloat16():
    case = TINY[0]
    assert_low_precision_rule(first(torch.ops.pyairir.topk_prompt_triton), reference.topk_prompt, list(case[:2]),
                              case[2:], grad_for(case))


def test_deterministic_across_thread_counts():
    logits, prompts, h, w, k, renormalize = (t.float() if isinstance(t, torch.Tensor) else t for t in CASES[0])
    grad = grad_for(CASES[0]).float()
    assert_same_for_any_thread_count(
        lambda: torch.ops.pyairir.topk_prompt_backward(grad, logits, prompts, k, renormalize))


P = torch.randn(5, 4, 3, 3)


@pytest.mark.parametrize("entry", [topk_prompt, torch.ops.pyairir.topk_prompt], ids=["python", "torch.ops"])
@pytest.mark.parametrize("logits, prompts, size, k, message", [
    (torch.randn(2, 5), P[0], (4, 4), 1, r"prompts must be a non-empty \(n, C, s, s\) tensor"),
    (torch.randn(2, 5), P[:, :, :, :2].contiguous(), (4, 4), 1, "square components"),
    (torch.randn(2, 5).int(), P.int(), (4, 4), 1, "prompts must be a .*floating tensor"),
    (torch.randn(2, 4), P, (4, 4), 1, r"logits must have shape \(B, n = 5\)"),
    (torch.randn(0, 5), P, (4, 4), 1, r"logits must have shape \(B, n = 5\)"),
    (torch.randn(2, 5).double(), P, (4, 4), 1, "logits must have the dtype and device of prompts"),
    (torch.randn(2, 5), P, (0, 4), 1, "height and width must be positive"),
    (torch.randn(2, 5), P, (4, 4), 6, r"k must be in \[1, n = 5\], got 6"),
    (torch.randn(2, 5), P, (4, 4), 0, r"k must be in \[1, n = 5\], got 0"),
])
def test_bad_input_is_a_clear_error(entry, logits, prompts, size, k, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        entry(logits, prompts, *size, k, True)
