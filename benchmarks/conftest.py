"""pytest-benchmark harness: every benchmark records its median under (group, variant); at the
end of the run the ratios that matter are printed as a table, measured in this one run, and
written to .benchmarks/ratios.json next to pytest-benchmark's own data.

    pytest benchmarks/                         # everything (about 15 minutes on 2 cores)
    pytest benchmarks/ -k "ops"                # the op benchmarks only
    pytest benchmarks/ --benchmark-json=b.json # plus pytest-benchmark's full JSON
    pytest benchmarks/ --reuse-freed-memory    # every variant with pyairir.runtime.reuse_freed_memory()
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pytest
import torch

import pyairir

# Report torch.compile's cold compile time (as a first-time user sees it), not a cache hit
# from an earlier run: a fresh inductor cache for the session.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="pyairir-benchmarks-inductor-"))
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

# (group, variant) -> median seconds; (group, variant + " compile") -> first-call seconds.
RESULTS: dict[tuple[str, str], float] = {}

# The claims: (what, group, slower variant, faster variant, target ratio slower / faster).
TARGETS = [
    ("LayerNorm op vs official LayerNorm, 96x256x256, NCHW", "layer_norm", "official", "op NCHW", 15.0),
    ("LayerNorm op vs official LayerNorm, 96x256x256, channels_last", "layer_norm", "official", "op channels_last",
     15.0),
    ("MDTA op vs eager, forward, 96x256x256 (qkv NCHW)", "mdta forward", "eager", "op NCHW", 3.0),
    ("MDTA op vs eager, forward, 96x256x256 (qkv channels_last)", "mdta forward", "eager", "op channels_last", 3.0),
    ("MDTA op vs eager, forward+backward, 96x256x256 (NCHW q, k, v)", "mdta forward+backward", "eager", "op NCHW",
     2.0),
    ("MDTA op vs eager, forward+backward (channels_last q, k, v)", "mdta forward+backward", "eager",
     "op channels_last", 2.0),
    ("gated_gelu (dwconv + gate) vs eager, forward, 510x256x256", "gated_gelu forward", "eager", "op channels_last",
     None),
    ("gated_gelu vs eager, forward+backward", "gated_gelu forward+backward", "eager", "op channels_last", None),
    ("PromptIR fast fp32 vs eager fp32, 3x256x256", "promptir inference", "eager fp32", "fast fp32", 2.5),
    ("PromptIR fast fp32 vs torch.compile fp32", "promptir inference", "compile fp32", "fast fp32", 1.0),
    ("PromptIR fast bf16 vs torch.compile + bf16 autocast", "promptir inference", "compile bf16 autocast",
     "fast bf16", 1.0),
    ("Restormer fast fp32 vs eager fp32, 3x256x256", "restormer inference", "eager fp32", "fast fp32", 2.5),
    ("Restormer fast fp32 vs torch.compile fp32", "restormer inference", "compile fp32", "fast fp32", 1.0),
    ("Restormer fast bf16 vs torch.compile + bf16 autocast", "restormer inference", "compile bf16 autocast",
     "fast bf16", 1.0),
    ("NAFNet-SIDD-w32 fast fp32 vs eager fp32, 3x256x256", "nafnet inference", "eager fp32", "fast fp32", None),
    ("PromptIR training step (fwd+bwd, 2x3x128x128) fast vs eager", "promptir training step", "eager", "fast", 1.8),
]


def pytest_addoption(parser):
    parser.addoption("--reuse-freed-memory", action="store_true",
                     help="run every variant with pyairir.runtime.reuse_freed_memory()")


def pytest_configure(config):
    if config.getoption("--reuse-freed-memory") and not pyairir.runtime.reuse_freed_memory():
        raise pytest.UsageError("--reuse-freed-memory: not supported here (needs Linux with glibc)")


@pytest.fixture
def measure(benchmark):
    """measure(group, variant, fn, rounds): benchmarks fn with pytest-benchmark and records its median."""

    def run(group: str, variant: str, fn, rounds: int = 5, warmup_rounds: int = 1) -> float:
        benchmark.group = group
        benchmark.extra_info["variant"] = variant
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        median = benchmark.stats.stats.median
        RESULTS[(group, variant)] = median
        return median

    return run


def record_compile_time(group: str, variant: str, first_call) -> float:
    """Times the first call of a torch.compile'd function (tracing + code generation)."""
    start = time.perf_counter()
    first_call()
    seconds = time.perf_counter() - start
    RESULTS[(group, variant + " compile")] = seconds
    return seconds


def _rows():
    for what, group, slow, fast, target in TARGETS:
        if (group, slow) in RESULTS and (group, fast) in RESULTS:
            ratio = RESULTS[(group, slow)] / RESULTS[(group, fast)]
            yield what, RESULTS[(group, slow)], RESULTS[(group, fast)], ratio, target


def pytest_terminal_summary(terminalreporter):
    rows = list(_rows())
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    reuse = terminalreporter.config.getoption("--reuse-freed-memory")
    write(f"pyairir speed ratios (one run; {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, freed memory {'reused' if reuse else 'returned (default)'})")
    write(f"{'claim':<66} {'slower':>9} {'faster':>9} {'ratio':>7} {'target':>7}")
    for what, slow, fast, ratio, target in rows:
        verdict = "" if target is None else (" met" if ratio >= target else " MISSED")
        target_text = "-" if target is None else f">={target:g}"
        write(f"{what:<66} {slow * 1e3:>7.1f}ms {fast * 1e3:>7.1f}ms {ratio:>6.2f}x {target_text:>7}{verdict}")
    compiles = {k: v for k, v in RESULTS.items() if k[1].endswith(" compile")}
    for (group, variant), seconds in sorted(compiles.items()):
        write(f"  {group}: {variant} time (first call) {seconds:.1f} s")
    _write_json(rows, compiles, reuse)


def _write_json(rows, compiles, reuse: bool) -> None:
    data = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "reuse_freed_memory": reuse,
        "medians_seconds": {f"{g} | {v}": t for (g, v), t in RESULTS.items()},
        "ratios": [{"claim": w, "slower_s": s, "faster_s": f, "ratio": r, "target": t} for w, s, f, r, t in rows],
        "compile_seconds": {f"{g} | {v}": t for (g, v), t in compiles.items()},
    }
    directory = Path(".benchmarks")
    directory.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=2)
    os.replace(handle.name, directory / "ratios.json")
