import os
import platform
import subprocess
import sys

import pytest
import torch

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


MB = 1 << 20


@pytest.fixture
def empty_cache():
    pyairir.runtime.release_cached_memory()
    yield
    pyairir.runtime.set_cached_memory_limit(pyairir.runtime.DEFAULT_CACHE_LIMIT)
    pyairir.runtime.release_cached_memory()


@pytest.mark.skipif(not pyairir.ops.extension.AVAILABLE, reason="the memory cache is part of pyairir._C")
def test_a_freed_block_is_served_again_in_a_scope_and_released_on_demand(empty_cache):
    runtime = pyairir.runtime
    with runtime.cached_memory():
        first = torch.empty(3 * MB, dtype=torch.uint8)
        address = first.data_ptr()
        del first
        assert runtime.cached_memory_bytes() == 4 * MB  # rounded up to whole 2 MB pages
        second = torch.empty(3 * MB + 5, dtype=torch.uint8)
        assert second.data_ptr() == address  # the same size once rounded
        assert runtime.cached_memory_bytes() == 0
        small = torch.empty(MB - 1, dtype=torch.uint8)  # below 1 MB: not the cache's
    del second, small
    assert runtime.cached_memory_bytes() == 4 * MB
    outside = torch.empty(3 * MB, dtype=torch.uint8)  # no scope open: PyTorch's own allocator
    assert outside.data_ptr() != address
    del outside
    assert runtime.cached_memory_bytes() == 4 * MB
    assert runtime.release_cached_memory() == 4 * MB
    assert runtime.cached_memory_bytes() == 0


@pytest.mark.skipif(not pyairir.ops.extension.AVAILABLE, reason="the memory cache is part of pyairir._C")
def test_idle_blocks_stay_within_the_peak_in_use_and_the_oldest_go_first(empty_cache):
    """The cache's idle blocks never exceed the most that was in use at once (where that peak is more
    than half the limit): a new block that would take in use + idle beyond twice the peak first frees
    the oldest idle ones. (Keeping every idle block took SIPL-PromptIR's guided pass at 512x512 from
    1.6 to 3.7 GB peak resident memory; freeing them all on every miss made a U-Net's decoder fault
    in its full-resolution activations again.)"""
    runtime = pyairir.runtime
    runtime.set_cached_memory_limit(48 * MB)  # at least half of it, 24 MB, may always be idle
    with runtime.cached_memory():
        older, newer = torch.empty(14 * MB, dtype=torch.uint8), torch.empty(11 * MB, dtype=torch.uint8)
        newer_address = newer.data_ptr()
        del older, newer  # 14 + 12 MB in use at the peak (whole 2 MB pages), so in use + idle <= 52 MB
        assert runtime.cached_memory_bytes() == 26 * MB
        small = torch.empty(2 * MB, dtype=torch.uint8)  # a miss within the bound: nothing freed
        assert runtime.cached_memory_bytes() == 26 * MB
        del small
        big = torch.empty(29 * MB, dtype=torch.uint8)  # 30 + 28 MB idle would cross 52 MB
        assert runtime.cached_memory_bytes() == 14 * MB  # so the oldest (14 MB) went; 12 + 2 MB stayed
        again = torch.empty(12 * MB, dtype=torch.uint8)
        assert again.data_ptr() == newer_address
        del big, again  # the peak is now 30 + 12 MB in use
        assert runtime.cached_memory_bytes() == 44 * MB
        huge = torch.empty(60 * MB, dtype=torch.uint8)  # 60 + 44 MB would cross 2 x 42 MB
        assert runtime.cached_memory_bytes() == 12 * MB  # the oldest two (2 and 30 MB) went
    del huge  # over the limit: freed, not kept
    assert runtime.cached_memory_bytes() == 12 * MB


@pytest.mark.skipif(not pyairir.ops.extension.AVAILABLE, reason="the memory cache is part of pyairir._C")
def test_half_the_limit_may_stay_idle_whatever_the_peak(empty_cache):
    """Room for idle blocks is at least half the limit: a pass that uses many sizes of block, each
    freed before the next is made (as a network's levels do), keeps them all for its next pass,
    where twice a small peak would have freed them. (At 3x256x256 fast PromptIR went from ~3000
    page faults a pass to ~500, measured on an Intel Xeon, 2026-12-03.)"""
    runtime = pyairir.runtime
    runtime.set_cached_memory_limit(64 * MB)  # 32 MB may always be idle
    with runtime.cached_memory():
        for size in (2, 4, 8, 16):  # each one in use alone: a peak of 16 MB
            block = torch.empty(size * MB, dtype=torch.uint8)
            del block
        assert runtime.cached_memory_bytes() == 30 * MB  # twice the peak (32 MB) would have kept 16 MB
        block = torch.empty(30 * MB, dtype=torch.uint8)  # 30 + 30 MB would cross 16 + 32 MB
        assert runtime.cached_memory_bytes() == 16 * MB  # so the oldest (2, 4 and 8 MB) went
    del block
    assert runtime.cached_memory_bytes() == 46 * MB
    with runtime.cached_memory():
        huge = torch.empty(64 * MB, dtype=torch.uint8)  # beyond 30 + 32 MB by itself: every idle block goes
        assert runtime.cached_memory_bytes() == 0
    del huge  # exactly the limit: kept
    assert runtime.cached_memory_bytes() == 64 * MB


@pytest.mark.skipif(not pyairir.ops.extension.AVAILABLE, reason="the memory cache is part of pyairir._C")
def test_the_limit_bounds_what_the_cache_keeps(empty_cache):
    runtime = pyairir.runtime
    runtime.set_cached_memory_limit(6 * MB)
    with runtime.cached_memory():
        blocks = [torch.empty(4 * MB, dtype=torch.uint8) for _ in range(2)]
    del blocks
    assert runtime.cached_memory_bytes() == 4 * MB  # the second block would exceed 6 MB: freed
    runtime.set_cached_memory_limit(0)
    assert runtime.cached_memory_bytes() == 0
    with pytest.raises(ValueError, match=r"limit_bytes must be an int >= 0, got -1"):
        runtime.set_cached_memory_limit(-1)


MODELS = [("promptir", dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
          ("nafnet_sidd_w32", dict(width=16, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]))]


@pytest.mark.parametrize("name, args", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.skipif(not pyairir.ops.extension.AVAILABLE, reason="the memory cache is part of pyairir._C")
def test_fast_inference_on_blocks_full_of_nan_equals_inference_without_the_cache(empty_cache, name, args):
    """The fast blocks' inference takes its large activations from the cache. Served blocks filled
    with NaN must not change the output by a bit, which they would if a kernel read memory it did
    not write (fresh pages come zeroed from the kernel and hide such a read)."""
    torch.manual_seed(0)
    model = pyairir.create_model(name, fast=True, **args).eval()
    x = torch.rand(1, 3, 160, 136)  # level-1 activations of 16 channels and more: 1.3 MB and up
    runtime = pyairir.runtime
    runtime.set_cached_memory_limit(0)
    with torch.no_grad():
        expected = model(x)
    assert runtime.cached_memory_bytes() == 0
    runtime.set_cached_memory_limit(runtime.DEFAULT_CACHE_LIMIT)
    runtime.poison_cached_memory(True)
    try:
        with torch.no_grad():
            first, second = model(x), model(x)  # the second pass on blocks the first one freed
    finally:
        runtime.poison_cached_memory(False)
    assert runtime.cached_memory_bytes() > 0
    assert torch.equal(first, expected) and torch.equal(second, expected)
    with torch.no_grad():  # the cache serves inference only (autograd off)
        model(x)
        again = model(x)
    assert torch.equal(again, expected)  # unpoisoned: a previous pass's values, not NaN


@pytest.mark.skipif(not hasattr(os, "fork") or not pyairir.ops.extension.AVAILABLE, reason="fork, and pyairir._C")
def test_a_forked_child_uses_its_copy_of_the_cache(empty_cache):
    """DataLoader workers fork the process; the cache (and its lock) must work in the child."""
    with pyairir.runtime.cached_memory():
        block = torch.empty(3 * MB, dtype=torch.uint8)
    del block
    pid = os.fork()
    if pid == 0:  # the child, single-threaded as a DataLoader worker: serve the block again, give it back
        torch.set_num_threads(1)  # (GNU OpenMP cannot run parallel regions in a child forked after it ran)
        with pyairir.runtime.cached_memory():
            again = torch.ones(3 * MB, dtype=torch.uint8)
        served = pyairir.runtime.cached_memory_bytes() == 0
        del again
        os._exit(0 if served and pyairir.runtime.cached_memory_bytes() == 4 * MB else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pyairir.runtime.cached_memory_bytes() == 4 * MB
