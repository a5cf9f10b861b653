"""Which implementation an op runs: the one place PYAIRIR_BACKEND is read.

- ``auto`` (default): CPU tensors run the C++ kernels; CUDA tensors run Triton.
- ``cuda``: CUDA tensors run the CUDA C++ kernels instead of Triton.
- ``reference``: the eager PyTorch reference, on any device.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

CHOICES = ("auto", "cuda", "reference")


def _parse(value: str) -> str:
    choice = value.strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"PYAIRIR_BACKEND must be one of {', '.join(CHOICES)}, got {value!r}")
    return choice


_backend = _parse(os.environ.get("PYAIRIR_BACKEND", ""))


def get_backend() -> str:
    """The backend chosen by PYAIRIR_BACKEND (read once, at import) or by `use_backend`."""
    return _backend


@contextlib.contextmanager
def use_backend(choice: str) -> Iterator[None]:
    """Runs the enclosed code with another backend, e.g. ``with use_backend("reference"):``."""
    global _backend
    previous, _backend = _backend, _parse(choice)
    try:
        yield
    finally:
        _backend = previous


def implementation(x: torch.Tensor) -> str:
    """Which implementation runs for an input on x's device: "reference", "cpp" or "triton"."""
    if _backend == "reference":
        return "reference"
    if x.device.type == "cuda" and _backend == "auto":
        return "triton"
    return "cpp"
