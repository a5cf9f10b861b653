"""Process-wide settings that make CPU restoration faster.

A fresh large tensor costs the kernel a page fault and the zeroing of every page on first touch.
On by default: `import pyairir` sets THP_MEM_ALLOC_ENABLE=1 (unless the environment already sets
it), which PyTorch reads when it allocates its first CPU tensor (so import pyairir before making
any tensor; `import torch` alone allocates none), and with which PyTorch page-aligns every CPU
tensor of 2 MB or more and asks the kernel for transparent huge pages (madvise MADV_HUGEPAGE):
one fault per 2 MB instead of 512. `huge_pages()` says whether this process has them. Fast
PromptIR ran about 10 % faster at 256x256 and 512x512, its peak memory within 2 %; NAFNet-w32,
whose tensors are smaller, within noise and 7 % more peak memory (measured 2026-12-02).

Opt-in, at a memory cost: glibc's malloc serves every allocation above 32 MB with a fresh mmap
and unmaps it on free, so each large activation (a 96-channel 256x256 float32 map is 25 MB,
GDFN's 510-channel one 134 MB) is faulted in and zeroed again on every forward.
`reuse_freed_memory()` tells malloc to keep freed memory in the process and hand it out again:
fast PromptIR runs 25-40 % faster, but its heap fragments, and at 512x512 the peak resident
memory grew from 1.3 to 2.1 GB (measured 2026-12-02, docs/benchmarks.md's machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
PAGE = 4096


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
