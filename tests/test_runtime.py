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
