"""Process-wide settings that make CPU restoration faster, each opt-in.

glibc's malloc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so
each large activation (a 96-channel 256x256 float32 map is 25 MB, GDFN's 510-channel one 134 MB)
is page-faulted and zeroed by the kernel again on every forward. For these models that is about
half of the CPU time, eager or fused alike. `reuse_freed_memory()` tells malloc to keep freed
memory in the process and hand it out again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3


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
