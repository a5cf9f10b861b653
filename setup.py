"""Builds pyairir._C against the torch that is already installed.

csrc/ops.cpp, csrc/cpu/*.cpp and csrc/runtime/*.cpp are always built (OpenMP, -O3). The CUDA
kernels csrc/cuda/*.cu and their torch bindings csrc/cuda/bindings/*.cpp are added when torch is a CUDA build and a CUDA toolkit is found;
PYAIRIR_BUILD_CUDA=1 forces it on (and fails if it cannot be built),
PYAIRIR_BUILD_CUDA=0 forces it off. Build without isolation, so that pip does
not fetch a second torch: `pip install --no-build-isolation -e .`
"""

import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "pyairir: torch must be installed before pyairir is built, and the build must see it:\n"
        "  pip install torch==2.13.0 setuptools wheel ninja\n"
        "  pip install --no-build-isolation -e ."
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def log(message: str) -> None:
    print(f"pyairir build: {message}", file=sys.stderr, flush=True)


def cuda_decision() -> tuple[bool, str]:
    """Whether to build csrc/cuda, and why."""
    forced = os.environ.get("PYAIRIR_BUILD_CUDA", "").strip()
    if forced not in ("", "0", "1"):
        sys.exit(f"pyairir build: PYAIRIR_BUILD_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False, "PYAIRIR_BUILD_CUDA=0"
    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if cpp_extension.CUDA_HOME is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME)")
    if forced == "1" and reasons:
        sys.exit("pyairir build: PYAIRIR_BUILD_CUDA=1 but " + "; ".join(reasons))
    if reasons:
        return False, "; ".join(reasons)
    why = "PYAIRIR_BUILD_CUDA=1" if forced else f"torch {torch.__version__} has CUDA {torch.version.cuda}"
    return True, f"{why}, toolkit at {cpp_extension.CUDA_HOME}"


def cpu_arch_flags() -> list[str]:
    """-march for the CPU kernels: the build machine's own CPU unless PYAIRIR_CPU_ARCH says otherwise
    (e.g. x86-64-v3 for a build that must run on other machines; `none` adds no -march)."""
    arch = os.environ.get("PYAIRIR_CPU_ARCH", "native").strip() or "native"
    log(f"CPU kernels compiled with -march={arch}" if arch != "none" else "CPU kernels compiled without -march")
    return [] if arch == "none" else [f"-march={arch}"]


def sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def extension():
    cpu_sources = ["csrc/ops.cpp", *sources("csrc/cpu/*.cpp"), *sources("csrc/runtime/*.cpp")]
    # torch.utils.cpp_extension adds the -std its headers need.
    cxx_flags = ["-O3", "-fopenmp", *cpu_arch_flags()]
    with_cuda, why = cuda_decision()
    if not with_cuda:
        log(f"building CPU kernels ({len(cpu_sources) - 1} files in csrc/cpu and csrc/runtime); CUDA kernels skipped: {why}")
        return cpp_extension.CppExtension(
            "pyairir._C", cpu_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"]
        )
    cuda_sources = sources("csrc/cuda/*.cu") + sources("csrc/cuda/bindings/*.cpp")
    log(f"building CPU kernels ({len(cpu_sources) - 1} files) and CUDA kernels ({len(cuda_sources)} files): {why}")
    return cpp_extension.CUDAExtension(
        "pyairir._C",
        cpu_sources + cuda_sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
