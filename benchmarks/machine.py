"""The machine a benchmark or learning run ran on, as its reports name it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def _cpuinfo() -> dict[str, str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (/proc/cpuinfo), empty where unknown."""
    return set(_cpuinfo().get("flags", "").split())


def cpu_description() -> str:
    """The CPU's model name and the vector extensions that decide kernel speed (the VNNI and AMX
    int8 ones for the int8 peers)."""
    flags = cpu_flags()
    extensions = [name for name in ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                    "amx_bf16", "amx_int8", "amx_tile") if name in flags]
    return (f"{_cpuinfo().get('model name', platform.processor() or platform.machine())}, {os.cpu_count()} CPUs, "
            f"{' '.join(extensions) or 'no AVX2'}; ATen kernels {torch.backends.cpu.get_cpu_capability()}")
