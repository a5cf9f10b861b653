"""What every op test does: run an op forward and backward, and judge bf16 results."""

from __future__ import annotations

import torch


def run(fn, tensors, rest, grad_out):
    """Output and gradients of fn(*tensors, *rest) w.r.t. each tensor that is not None.

    Returns [output, grad of tensors[0], grad of tensors[1], ...] (None inputs skipped)."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y = fn(*leaves, *rest)
    y.backward(grad_out.to(y.dtype))
    return [y.detach()] + [t.grad for t in leaves if t is not None]


def assert_all_close(got, expected, atol, rtol):
    """Each got tensor against its expected (float64) one; atol is relative to the expected's largest value."""
    for index, (g, e) in enumerate(zip(got, expected)):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(g.double(), e.double(), atol=atol * scale, rtol=rtol,
                                   msg=lambda m, i=index: f"result {i} (0 = output, then gradients): {m}")


def assert_bfloat16_rule(fn, reference, tensors, rest, grad_out):
    """A bf16 kernel's error against the fp32 reference stays within 2x the error of the
    reference itself run in bf16 (plus one bf16 ulp at the result's scale), for the output and
    every gradient."""

    def at(dtype):
        return [t.to(dtype) if t is not None else None for t in tensors]

    exact = run(reference, at(torch.float32), rest, grad_out.float())
    ref_bf16 = run(reference, at(torch.bfloat16), rest, grad_out.bfloat16())
    got = run(fn, at(torch.bfloat16), rest, grad_out.bfloat16())
    for index, (g, r, e) in enumerate(zip(got, ref_bf16, exact)):
        error = (g.float() - e).abs().max().item()
        bound = 2 * (r.float() - e).abs().max().item() + e.abs().max().item() * 2 ** -8
        assert error <= bound, f"result {index}: bf16 kernel error {error} > bound {bound}"


def layout_id(x: torch.Tensor) -> str:
    return "nchw" if x.is_contiguous() else "cl"


def assert_same_for_any_thread_count(compute):
    """compute() returns a tensor or a tuple of tensors that must be bitwise identical run on 1 and
    on 2 threads (the kernels split their reductions by shape, never by thread)."""
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            result = compute()
            results.append(result if isinstance(result, (tuple, list)) else (result,))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
