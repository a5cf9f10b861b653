import os
import platform
import subprocess
import sys

import pytest

import pyairir


def test_reuse_freed_memory_takes_effect_on_glibc():
    code = "import pyairir; print(pyairir.runtime.reuse_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "True" if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" else "False"
    assert result.stdout.strip() == expected


def test_reuse_freed_memory_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match=r"threshold_bytes must be in \(0, 2\*\*30\], got 0"):
        pyairir.runtime.reuse_freed_memory(0)


def _huge_pages_in_a_new_process(code: str, setting: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    return subprocess.run([sys.executable, "-c", code + "; print(pyairir.runtime.huge_pages())"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_importing_pyairir_before_any_tensor_puts_large_tensors_on_huge_pages():
    assert _huge_pages_in_a_new_process("import pyairir, torch", None) == "True"
    assert _huge_pages_in_a_new_process("import torch, pyairir", None) == "True"  # import torch allocates nothing


def test_huge_pages_stay_off_after_an_earlier_tensor_or_when_the_environment_says_0():
    assert _huge_pages_in_a_new_process("import torch; torch.ones(3); import pyairir", None) == "False"
    assert _huge_pages_in_a_new_process("import pyairir, torch", "0") == "False"
