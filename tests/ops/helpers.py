"""What every op test does: copy inputs keeping their layout, run an op forward and backward, and
judge low-precision results."""

from __future__ import annotations

import torch


def exact_copy(t: torch.Tensor | None, dtype: torch.dtype | None = None,
               requires_grad: bool = False) -> torch.Tensor | None:
    """t's values in `dtype` (default t's), with t's exact sizes and strides.

    `clone()` and `.to(dtype)` turn a channel slice of a channels_last tensor (what chunking one
    qkv tensor gives) into a dense tensor, so the kernel under test would never see the slice.
    Here the copy lives in a buffer laid out like t's, whose elements outside t hold NaN: a kernel
    that reads past its operand's elements produces NaN and fails the comparison."""
    if t is None:
        return None
    dtype = dtype or t.dtype
    if t.numel() == 0 or 0 in t.stride():
        copy = t.detach().to(dtype, copy=True)
    else:
        span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
        copy = torch.full((span,), float("nan"), dtype=dtype).as_strided(t.shape, t.stride())
        copy.copy_(t.detach())
    return copy.requires_grad_(requires_grad)


def run(fn, tensors, rest, grad_out):
    """Output and gradients of fn(*tensors, *rest) w.r.t. each tensor that is not None, the
    tensors passed in their own layout (exact_copy).

    Returns [output, grad of tensors[0], grad of tensors[1], ...] (None inputs skipped), the
    gradients as the backward made them (autograd.grad: not restrided into a leaf's .grad)."""
    leaves = [exact_copy(t, requires_grad=True) for t in tensors]
    y = fn(*leaves, *rest)
    return [y.detach(), *torch.autograd.grad(y, [t for t in leaves if t is not None], grad_out.to(y.dtype))]


def assert_all_close(got, expected, atol, rtol):
    """Each got tensor against its expected (float64) one; atol is relative to the expected's largest value."""
    for index, (g, e) in enumerate(zip(got, expected)):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(g.double(), e.double(), atol=atol * scale, rtol=rtol,
                                   msg=lambda m, i=index: f"result {i} (0 = output, then gradients): {m}")


def assert_rows_close(got, expected, rtol, row_dims):
    """Each got tensor against its expected one, every row (the elements that share the indices
    outside `row_dims`) within rtol of that row's largest expected value: rows whose magnitudes
    differ by 1e30 are each held to their own scale. Tensors of fewer dims (the temperature's
    gradient) are compared as one row."""
    for index, (g, e) in enumerate(zip(got, expected)):
        g, e = g.double(), e.double()
        dims = row_dims if e.dim() == 4 else tuple(range(e.dim()))
        scale = e.abs().amax(dim=dims, keepdim=True)
        error = ((g - e).abs() / scale).amax().item()
        assert error <= rtol, f"result {index} (0 = output, then gradients): error {error:.3g} of its row's scale"


def assert_low_precision_rule(fn, reference, tensors, rest, grad_out, dtype=torch.bfloat16):
    """A bf16 (or fp16) kernel's error against the fp32 reference stays within 2x the error of
    the reference itself run in that dtype, plus rounding at the result's scale, for the output
    and every gradient.

    The rounding allowance is the dtype's unit roundoff (half an ulp: 2^-8 for bf16, 2^-11 for
    fp16), or one ulp for results of fewer than 16 elements (a temperature gradient: one sum per
    head). Such a result's "largest" reference error is a single draw that can land near zero,
    while the kernel's value passes through two roundings to the dtype (the output saved for the
    backward, then the sum itself)."""

    def at(precision):
        return [exact_copy(t, precision) for t in tensors]

    exact = run(reference, at(torch.float32), rest, grad_out.float())
    ref_low = run(reference, at(dtype), rest, grad_out.to(dtype))
    got = run(fn, at(dtype), rest, grad_out.to(dtype))
    for index, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert g.dtype == dtype, f"result {index} is {g.dtype}, expected {dtype}"
        rounding = torch.finfo(dtype).eps * (1.0 if e.numel() < 16 else 0.5)
        error = (g.float() - e).abs().max().item()
        bound = 2 * (r.float() - e).abs().max().item() + e.abs().max().item() * rounding
        assert error <= bound, f"result {index}: {dtype} kernel error {error} > bound {bound}"


def layout_id(x: torch.Tensor) -> str:
    return "nchw" if x.is_contiguous() else "cl"


THREAD_COUNTS = (1, 2, 3, 4, 1)


def assert_same_for_any_thread_count(compute):
    """compute() returns a tensor or a tuple of tensors that must be bitwise identical run on 1, 2,
    3 and 4 threads (the kernels split their reductions by shape, never by thread; 3 threads split
    work unevenly, 4 exceed this machine's cores)."""
    threads = torch.get_num_threads()
    results = []
    try:
        for n in THREAD_COUNTS:
            torch.set_num_threads(n)
            result = compute()
            results.append(result if isinstance(result, (tuple, list)) else (result,))
    finally:
        torch.set_num_threads(threads)
    for threads_used, other in zip(THREAD_COUNTS[1:], results[1:]):
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b), f"{threads_used} threads give another result than 1 thread"
