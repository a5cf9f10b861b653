"""Registers an op's fake kernels and autograd formula, for its C++ kernels and its Triton kernels.

The C++ op pyairir::<name> and its backward pyairir::<name>_backward are
defined in csrc/ops.cpp. The Triton launchers (pyairir.triton_kernels.<name>:
`forward`, `backward`) are wrapped here as custom ops pyairir::<name>_triton
and pyairir::<name>_triton_backward with the same schemas, so that both
implementations share one fake kernel and one autograd formula.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from pyairir.ops import extension


def _schema(op: str) -> str:
    """The argument list and returns of a C++ op's schema, e.g. '(Tensor x, float eps) -> Tensor'."""
    if not hasattr(torch.ops.pyairir, op):
        raise RuntimeError(f"pyairir._C has no op {op}: the compiled extension is older than the Python code. "
                           "Rebuild it with `pip install --no-build-isolation -e .`")
    full = str(getattr(torch.ops.pyairir, op).default._schema)
    return full[full.index("("):]


def _triton_op(name: str, launcher: str, schema_of: str, op: str):
    """pyairir::<op>, running pyairir.triton_kernels.<name>.<launcher>, with the schema of the C++ op <schema_of>."""
    def launch(*args):
        kernels = importlib.import_module(f"pyairir.triton_kernels.{name}")
        return getattr(kernels, launcher)(*args)

    return torch.library.custom_op(f"pyairir::{op}", launch, mutates_args=(), schema=_schema(schema_of))


def register(
    name: str,
    *,
    fake: Callable,
    fake_backward: Callable,
    setup_context: Callable,
    make_backward: Callable[[Callable], Callable],
) -> None:
    """Registers fake kernels and autograd for pyairir::<name> and defines pyairir::<name>_triton.

    make_backward(backward_op) returns the autograd backward(ctx, *grads) that calls backward_op,
    the C++ or the Triton backward op.
    """
    if not extension.AVAILABLE:
        return
    triton_forward = _triton_op(name, "forward", name, f"{name}_triton")
    triton_backward = _triton_op(name, "backward", f"{name}_backward", f"{name}_triton_backward")
    triton_forward.register_fake(fake)
    triton_backward.register_fake(fake_backward)
    triton_forward.register_autograd(make_backward(getattr(torch.ops.pyairir, f"{name}_triton_backward")),
                                     setup_context=setup_context)
    torch.library.register_fake(f"pyairir::{name}")(fake)
    torch.library.register_fake(f"pyairir::{name}_backward")(fake_backward)
    torch.library.register_autograd(f"pyairir::{name}", make_backward(getattr(torch.ops.pyairir, f"{name}_backward")),
                                    setup_context=setup_context)


def run(name: str, implementation: str, reference: Callable, *args):
    """Calls the implementation `pyairir.ops.backend.implementation` chose for pyairir::<name>."""
    if implementation == "reference":
        return reference(*args)
    extension.require(name)
    if implementation == "triton":
        return getattr(torch.ops.pyairir, f"{name}_triton")(*args)
    return getattr(torch.ops.pyairir, name)(*args)
