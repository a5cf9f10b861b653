"""Process-wide settings that make CPU restoration faster.

A fresh large tensor costs the kernel a page fault and the zeroing of every page on first touch.
On by default: `import pyairir` sets THP_MEM_ALLOC_ENABLE=1 (unless the environment already sets
it), which PyTorch reads when it allocates its first CPU tensor (so import pyairir before making
any tensor; `import torch` alone allocates none), and with which PyTorch page-aligns every CPU
tensor of 2 MB or more and asks the kernel for transparent huge pages (madvise MADV_HUGEPAGE):
one fault per 2 MB instead of 512. `huge_pages()` says whether this process has them. Fast
PromptIR ran about 10 % faster at 256x256 and 512x512, its peak memory within 2 %; NAFNet-w32,
whose tensors are smaller, within noise and 7 % more peak memory (measured 2026-12-02).

On by default in fast inference: `cached_memory()`, a scope in which large CPU blocks (1 MB and
more) come from pyairir's cache of freed blocks rather than from a fresh mapping (ONNX Runtime and
OpenVINO keep an arena the same way). The fast blocks (TransformerBlock, MDTA, GDFN, NAFBlock)
open it when autograd is off; the cache keeps what they freed for the next pass, up to
`set_cached_memory_limit()` bytes (DEFAULT_CACHE_LIMIT, 1 GB, unless set), until
`release_cached_memory()`. Its memory is bounded: what it has served and holds (in use and idle)
stays within the most that was in use at once plus the larger of that peak and half the limit,
the oldest idle blocks going first. Its effect on time, page faults and peak memory is in the
README ("Memory reuse"; `python -m benchmarks.memory_cache`).

On by default on CPUs without bf16 arithmetic (x86 without AVX512-BF16 or AMX-BF16): a fast model
holding bf16 weights computes its layers in float32 (`float32_for_bf16()`). There every bf16
product is emulated, each operand converted to float32 first (oneDNN's bf16 convolutions ran at a
fifth of their float32 speed on such a Xeon); a fast layer converts its bf16 input and weights once
instead, computes in float32, and rounds its output to bf16, so the activations between layers
(the residual stream, the skip connections) and the model's output stay bf16. A product of two
bf16 values is exact in float32, so a convolution so computed equals a bf16 one that accumulates
in float32 up to the order of its sums; the layer's intermediates are not rounded to bf16 on the
way. `set_float32_for_bf16()` overrides the choice.

Opt-in, at a memory cost: glibc's malloc serves every allocation above 32 MB with a fresh mmap
and unmaps it on free, so each large activation (a 96-channel 256x256 float32 map is 25 MB,
GDFN's 510-channel one 134 MB) is faulted in and zeroed again on every forward.
`reuse_freed_memory()` tells malloc to keep freed memory in the process and hand it out again:
fast PromptIR runs 25-40 % faster, but its heap fragments, and at 512x512 the peak resident
memory grew from 1.3 to 2.1 GB (measured 2026-12-02, docs/benchmarks.md's machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

import torch

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
PAGE = 4096
DEFAULT_CACHE_LIMIT = 1 << 30  # bytes the memory cache keeps unless set_cached_memory_limit says otherwise


def huge_pages() -> bool:
    """Whether PyTorch asks for transparent huge pages for large CPU tensors in this process
    (THP_MEM_ALLOC_ENABLE=1 was set when torch allocated its first CPU tensor). Observed, not
    assumed: only then is a 4 MB tensor page-aligned (otherwise glibc puts it 64 bytes into its
    mapping). Whether the
    kernel grants them depends on /sys/kernel/mm/transparent_hugepage/enabled (madvise or always)."""
    return torch.empty(4 << 20, dtype=torch.uint8).data_ptr() % PAGE == 0


def reuse_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Makes glibc malloc serve allocations below `threshold_bytes` from the heap and keep freed
    memory for reuse (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD), for the whole process.

    Returns True if it took effect (Linux with glibc), False elsewhere. The cost: memory freed by
    tensors stays with the process (its peak is reused, not returned to the system).
    """
    if not 0 < threshold_bytes <= 1 << 30:
        raise ValueError(f"reuse_freed_memory: threshold_bytes must be in (0, 2**30], got {threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, threshold_bytes))


_float32_for_bf16: bool | None = None  # set_float32_for_bf16's choice; None: by the CPU


def bf16_arithmetic() -> bool:
    """Whether this CPU multiplies bf16 values in hardware: AVX512-BF16 or AMX-BF16 on x86 (as
    PyTorch's cpuinfo reports them); assumed on other architectures and without the extension."""
    extension = _extension()
    return extension.bf16_arithmetic() if extension is not None else True


def float32_for_bf16() -> bool:
    """Whether fast inference computes the layers of a bf16 model in float32 on the CPU (see the
    module's docstring): as set by `set_float32_for_bf16()`, by default where the CPU has no bf16
    arithmetic."""
    return not bf16_arithmetic() if _float32_for_bf16 is None else _float32_for_bf16


def set_float32_for_bf16(enabled: bool | None) -> None:
    """True: fast bf16 inference on the CPU computes its layers in float32; False: in bf16 (each
    product emulated where the CPU has no bf16 arithmetic); None: by the CPU (the default)."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"set_float32_for_bf16: enabled must be True, False or None, got {enabled!r}")
    global _float32_for_bf16
    _float32_for_bf16 = enabled


def _extension():
    """pyairir._C as pyairir.ops.extension loaded it, or None where it did not load (then the cache
    functions do nothing)."""
    from pyairir.ops import extension  # imported here: pyairir.nn imports this module early

    return sys.modules["pyairir._C"] if extension.AVAILABLE else None


@contextlib.contextmanager
def cached_memory() -> Iterator[None]:
    """A scope in which CPU allocations of 1 MB or more are served from pyairir's cache of freed
    blocks when it holds one of the same size (rounded up to 2 MB), instead of from memory the
    kernel must fault in and zero again. Every block served so goes back to the cache when freed,
    inside the scope or after it, up to the cache's limit. The blocks it has served and holds, in
    use and idle, stay within the most that were in use at once (since the last
    `release_cached_memory()`) plus the larger of that peak and half the limit: a request it cannot
    serve that would cross that bound first frees the oldest idle blocks. Other allocations are
    untouched.

    Scopes nest and may be open on several threads. The cache outlives them: a second forward
    pass of the same model reuses the first one's blocks. `release_cached_memory()` returns them
    to the system. Without the compiled extension this does nothing."""
    extension = _extension()
    if extension is None:
        yield
        return
    extension.memory_cache_open()
    try:
        yield
    finally:
        extension.memory_cache_close()


def release_cached_memory() -> int:
    """Frees every block the cache holds (blocks in use are not affected) and starts its peak afresh;
    returns the bytes freed."""
    extension = _extension()
    return extension.memory_cache_release() if extension is not None else 0


def cached_memory_bytes() -> int:
    """Bytes the cache holds, free for reuse (0 without the compiled extension)."""
    extension = _extension()
    return extension.memory_cache_bytes() if extension is not None else 0


def set_cached_memory_limit(limit_bytes: int) -> None:
    """At most `limit_bytes` are kept in the cache (blocks freed beyond it go to the system; if it
    holds more now, every idle block is freed). 0 turns caching off. The default is
    DEFAULT_CACHE_LIMIT, 1 GB."""
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 0:
        raise ValueError(f"set_cached_memory_limit: limit_bytes must be an int >= 0, got {limit_bytes!r}")
    extension = _extension()
    if extension is not None:
        extension.memory_cache_set_limit(limit_bytes)


def poison_cached_memory(enabled: bool) -> None:
    """A debugging aid: while enabled, every block the cache serves is first filled with 0xFF bytes,
    NaN in every floating-point type, so that a kernel reading memory it did not write turns the
    output to NaN instead of reading a previous pass's values (tests/test_runtime.py runs the fast
    models so)."""
    extension = _extension()
    if extension is not None:
        extension.memory_cache_poison(bool(enabled))
