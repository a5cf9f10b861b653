"""Loads pyairir._C, whose import registers the C++ kernels under torch.ops.pyairir."""

from __future__ import annotations

import importlib

_LOAD_ERROR: str | None = None
try:
    importlib.import_module("pyairir._C")
except ImportError as error:  # a source tree that was never built, or a broken build
    _LOAD_ERROR = str(error)

AVAILABLE: bool = _LOAD_ERROR is None


def require(op: str) -> None:
    """Raises a RuntimeError saying how to build the extension if `op` needs it and it is missing."""
    if not AVAILABLE:
        raise RuntimeError(
            f"pyairir: torch.ops.pyairir.{op} needs the compiled extension pyairir._C, which did not load "
            f"({_LOAD_ERROR}). Build it with `pip install --no-build-isolation -e .` from the repository, "
            "or set PYAIRIR_BACKEND=reference to run the eager reference instead."
        )
