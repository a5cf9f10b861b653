"""The package imports anywhere, and its CUDA sources compile wherever nvcc exists."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_import_touches_no_gpu_and_no_triton():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import sys, torch, pyairir; "
            "assert 'triton' not in sys.modules, 'import pyairir imported triton'; "
            "assert not torch.cuda.is_initialized(), 'import pyairir initialised CUDA'; "
            "assert hasattr(torch.ops.pyairir, 'layer_norm_channels'); print(pyairir.__version__)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH: CUDA sources not compile-checked")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[p.name for p in CUDA_SOURCES])
def test_cuda_source_compiles(source, tmp_path):
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", "-c", str(source), "-o", str(tmp_path / "k.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


CUDA_BINDINGS = sorted((ROOT / "csrc" / "cuda" / "bindings").glob("*.cpp"))


def cuda_binding_compiler() -> tuple[list[str] | None, str]:
    """The g++ command (without the source) that type-checks a CUDA binding against this torch's
    CUDA headers, or None and why not: the CPU torch wheel has no ATen/cuda headers."""
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return None, f"torch {torch.__version__} is a CPU build: it has no CUDA headers to compile the bindings against"
    if cpp_extension.CUDA_HOME is None or not Path(cpp_extension.CUDA_HOME, "include", "cuda_runtime.h").is_file():
        return None, f"no CUDA toolkit headers at CUDA_HOME={cpp_extension.CUDA_HOME} (set CUDA_HOME to the toolkit)"
    includes = [*cpp_extension.include_paths(device_type="cuda"), sysconfig.get_paths()["include"]]
    return ["g++", "-std=c++20", "-fsyntax-only", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            *(f"-I{path}" for path in includes)], ""


@pytest.mark.parametrize("source", CUDA_BINDINGS, ids=[p.name for p in CUDA_BINDINGS])
def test_cuda_binding_compiles(source):
    """Only where torch is a CUDA build (the separate venv of DEVELOPERS.md): the bindings include
    ATen's CUDA headers, which the CPU wheel lacks; CI skips this."""
    command, why_not = cuda_binding_compiler()
    if command is None:
        pytest.skip(why_not)
    result = subprocess.run([*command, str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


SCHEMAS = (ROOT / "csrc" / "ops.cpp").read_text()
DEFINED = re.findall(r'm\.def\(\s*"(\w+)\(', SCHEMAS)
OPS = [op for op in DEFINED if not op.endswith("_backward")]


def registrations(source: str, key: str) -> set[str]:
    """The ops a C++ source registers in its TORCH_LIBRARY_IMPL(pyairir, key, m) block."""
    block = re.search(r"TORCH_LIBRARY_IMPL\(pyairir,\s*" + key + r",\s*m\)\s*\{(.*?)\n\}", source, re.S)
    return set(re.findall(r'm\.impl\("(\w+)"', block.group(1))) if block else set()


def python_definitions(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}


def test_every_op_has_every_face():
    """Each op of csrc/ops.cpp, forward and backward, is defined by every face under the op's
    file name: a schema, the CPU kernels registered for both, the CUDA launchers declared,
    defined and called by a binding that registers both, a Triton forward and backward over
    @triton.jit kernels, the Python entry with its fake kernels and autograd, and the reference."""
    from torch._library.simple_registry import singleton

    import pyairir

    assert len(OPS) == 6, OPS
    for op in OPS:
        pair = {op, f"{op}_backward"}
        assert f"{op}_backward" in DEFINED, f"{op}: no backward schema"
        assert registrations((ROOT / f"csrc/cpu/{op}.cpp").read_text(), "CPU") == pair, f"{op}: CPU registrations"
        header, kernel = (ROOT / f"csrc/cuda/{op}.h").read_text(), (ROOT / f"csrc/cuda/{op}.cu").read_text()
        binding = (ROOT / f"csrc/cuda/bindings/{op}.cpp").read_text()
        launchers = re.findall(r"cudaError_t (\w+)\(", header)
        assert launchers and "__global__" in kernel, f"{op}: no CUDA kernel or launcher"
        for launcher in launchers:
            assert f"cudaError_t {launcher}(" in kernel, f"{op}: launcher {launcher} is declared but not defined"
            assert f"cuda::{launcher}(" in binding, f"{op}: launcher {launcher} is never called by the binding"
        assert registrations(binding, "CUDA") == pair, f"{op}: CUDA registrations"
        triton_source = ROOT / f"triton_kernels/{op}.py"
        assert {"forward", "backward"} <= python_definitions(triton_source), f"{op}: Triton forward/backward"
        assert "@triton.jit" in triton_source.read_text(), f"{op}: no Triton kernel"
        assert op in python_definitions(ROOT / f"pyairir/ops/{op}.py"), f"{op}: no Python entry"
        assert op in python_definitions(ROOT / f"pyairir/reference/{op}.py"), f"{op}: no reference function"
        assert callable(getattr(pyairir.reference, op)) and callable(getattr(pyairir.ops, op))
        for name in (op, f"{op}_backward", f"{op}_triton", f"{op}_triton_backward"):
            qualified = f"pyairir::{name}"
            assert singleton.find(qualified).fake_impl.kernel is not None, f"{name}: no fake kernel"
        for name in (op, f"{op}_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pyairir::{name}", "CPU"), f"{name}: no CPU kernel"
        for name in (op, f"{op}_triton"):
            has_autograd = torch._C._dispatch_has_kernel_for_dispatch_key(f"pyairir::{name}", "Autograd")
            assert has_autograd, f"{name}: no autograd formula"


TRITON_SOURCES = sorted((ROOT / "triton_kernels").glob("*.py"))


def unprecise_dots(source: Path) -> list[str]:
    """The tl.dot calls of a Triton source that do not ask for IEEE products: on a GPU such a
    dot of float32 operands runs in TF32 (10-bit mantissa), which the interpreter cannot show."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dot"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "tl"):
            precision = {k.arg: k.value for k in node.keywords}.get("input_precision")
            if not (isinstance(precision, ast.Constant) and precision.value == "ieee"):
                found.append(f"{source.name}:{node.lineno}")
    return found


def test_every_triton_dot_is_ieee():
    """Every Triton kernel computes in float32 or float64 (bf16 loads are upcast first), so every
    tl.dot must say input_precision="ieee"."""
    assert TRITON_SOURCES
    assert [line for source in TRITON_SOURCES for line in unprecise_dots(source)] == []
