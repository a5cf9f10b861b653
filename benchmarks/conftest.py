"""pytest-benchmark harness: every benchmark records its median under (group, variant); at the
end of the run the ratios that matter are printed as a table, measured in this one run, and
written to .benchmarks/ratios.json next to pytest-benchmark's own data.

    pytest benchmarks/                         # everything (about 25 minutes on 2 cores)
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
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pyairir
from pyairir._files import write_text_atomic

# Report torch.compile's cold compile time (as a first-time user sees it), not a cache hit
# from an earlier run: a fresh inductor cache for the session.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="pyairir-benchmarks-inductor-"))
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

# (group, variant) -> median seconds (megabytes of peak RSS for groups ending in "peak RSS");
# (group, variant + " compile") -> first-call seconds.
RESULTS: dict[tuple[str, str], float] = {}


@dataclass(frozen=True)
class Claim:
    """What `pytest benchmarks/` checks: the ratio of two variants of one group, larger / smaller
    (time or memory), at least `target` (or at most, for claims that something stays flat)."""

    what: str
    group: str
    larger: str
    smaller: str
    target: float | None = None
    at_most: bool = False

    def met(self, ratio: float) -> bool | None:
        if self.target is None:
            return None
        return ratio <= self.target if self.at_most else ratio >= self.target

    def target_text(self) -> str:
        return "-" if self.target is None else f"{'<=' if self.at_most else '>='}{self.target:g}"


@dataclass(frozen=True)
class Limit:
    """An absolute bound on one variant's value (seconds, or MB of peak RSS)."""

    what: str
    group: str
    variant: str
    limit: float


def cpu_description() -> str:
    """The CPU's model name and the vector extensions that decide kernel speed, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    extensions = [name for name in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
                  if name in flags]
    return (f"{fields.get('model name', platform.machine())}, {os.cpu_count()} CPUs, {' '.join(extensions)}; "
            f"ATen kernels {torch.backends.cpu.get_cpu_capability()}")


def unit(group: str) -> str:
    return "MB" if group.endswith("peak RSS") else "s"


def shown(group: str, value: float) -> str:
    return f"{value:.0f} MB" if unit(group) == "MB" else f"{value * 1e3:.1f} ms"


TARGETS = [
    Claim("LayerNorm op vs official LayerNorm, 96x256x256, NCHW", "layer_norm", "official", "op NCHW", 15.0),
    Claim("LayerNorm op vs official LayerNorm, 96x256x256, channels_last", "layer_norm", "official",
          "op channels_last", 15.0),
    Claim("MDTA op vs eager, forward, 96x256x256 (qkv NCHW)", "mdta forward", "eager", "op NCHW", 3.0),
    Claim("MDTA op vs eager, forward, 96x256x256 (qkv channels_last)", "mdta forward", "eager", "op channels_last",
          3.0),
    Claim("MDTA op vs eager, forward+backward, 96x256x256 (NCHW q, k, v)", "mdta forward+backward", "eager",
          "op NCHW", 2.0),
    Claim("MDTA op vs eager, forward+backward (channels_last q, k, v)", "mdta forward+backward", "eager",
          "op channels_last", 2.0),
    Claim("gated_gelu (dwconv + gate) vs eager, forward, 510x256x256", "gated_gelu forward", "eager",
          "op channels_last"),
    Claim("gated_gelu vs eager, forward+backward", "gated_gelu forward+backward", "eager", "op channels_last"),
    Claim("film_gelu op vs eager FiLM + GELU, forward, 96x256x256 NCHW", "film_gelu forward", "eager", "op NCHW", 2.0),
    Claim("film_gelu op vs eager FiLM + GELU, forward, channels_last", "film_gelu forward", "eager",
          "op channels_last", 2.0),
    Claim("film_gelu op vs eager, forward+backward, channels_last", "film_gelu forward+backward", "eager",
          "op channels_last"),
    Claim("topk_prompt (k=1 of 5) vs official PromptGenBlock routing (5 prompts), 64x256x256", "topk_prompt",
          "official, 5 prompts", "op k=1, 5 prompts", 3.0),
    Claim("topk_prompt k=1: 15 prompts / 5 prompts (flat)", "topk_prompt", "op k=1, 15 prompts",
          "op k=1, 5 prompts", 1.1, at_most=True),
    Claim("topk_prompt dense (fast PromptGenBlock) vs official PromptGenBlock routing, 5 prompts", "topk_prompt",
          "official, 5 prompts", "fast PromptGenBlock, 5 prompts"),
    Claim("topk_prompt k=1 vs official routing, forward+backward, 5 prompts", "topk_prompt forward+backward",
          "official, 5 prompts", "op k=1, 5 prompts"),
    Claim("proxy_attention op vs eager, 65536 queries x 4096 keys, C=96", "proxy_attention forward", "eager", "op",
          None),
    Claim("SIPL-PromptIR guided pass, 3x512x512: fast vs official eager", "sipl guided pass 512", "official eager",
          "fast", 3.0),
    Claim("SIPL-PromptIR guided pass, 3x512x512: peak RSS official eager / fast", "sipl guided pass 512 peak RSS",
          "official eager", "fast", 2.0),
    Claim("SIPL refinement (paper loop), 3x256x256: full pass / cached encoder", "sipl refinement 256",
          "full pass", "cached encoder", 1 / 0.7),
    *(claim for name, title in (("promptir", "PromptIR"), ("restormer", "Restormer")) for claim in (
        Claim(f"{title} fast fp32 vs official eager fp32, 3x256x256", f"{name} inference", "official eager fp32",
              "fast fp32", 2.5),
        Claim(f"{title} fast fp32 vs torch.compile fp32", f"{name} inference", "compile fp32", "fast fp32", 1.0),
        Claim(f"{title} fast fp32 vs torch.compile fp32, freezing", f"{name} inference", "compile fp32 freezing",
              "fast fp32", 1.0),
        Claim(f"{title} fast bf16 vs torch.compile of the same bf16 model", f"{name} inference", "compile bf16",
              "fast bf16", 1.0),
        Claim(f"{title} fast bf16 vs torch.compile bf16, freezing", f"{name} inference", "compile bf16 freezing",
              "fast bf16", 1.0),
        Claim(f"{title} fast bf16 vs torch.compile + bf16 autocast", f"{name} inference", "compile bf16 autocast",
              "fast bf16", 1.0),
        Claim(f"{title} fast bf16 vs official eager + bf16 autocast", f"{name} inference",
              "official eager bf16 autocast", "fast bf16"),
    )),
    Claim("NAFNet-SIDD-w32 fast fp32 vs official eager fp32, 3x256x256", "nafnet inference", "official eager fp32",
          "fast fp32"),
    Claim("NAFNet-SIDD-w32 fast fp32 vs torch.compile fp32", "nafnet inference", "compile fp32", "fast fp32"),
    Claim("PromptIR training step (fwd+bwd, 2x3x128x128) fast vs official eager", "promptir training step",
          "official eager", "fast", 1.8),
]

LIMITS = [
    Limit("SIPL-PromptIR restore (2 iterations), 3x1024x1024, fast: peak RSS", "sipl restore 1024 peak RSS", "fast",
          8192.0),
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
    for claim in TARGETS:
        larger, smaller = RESULTS.get((claim.group, claim.larger)), RESULTS.get((claim.group, claim.smaller))
        if larger is not None and smaller is not None:
            yield claim, larger, smaller, larger / smaller


def _limits():
    for limit in LIMITS:
        if (limit.group, limit.variant) in RESULTS:
            yield limit, RESULTS[(limit.group, limit.variant)]


def pytest_terminal_summary(terminalreporter):
    rows, limits = list(_rows()), list(_limits())
    if not rows and not limits:
        return
    write = terminalreporter.write_line
    write("")
    reuse = terminalreporter.config.getoption("--reuse-freed-memory")
    write(f"pyairir speed and memory ratios (one run; {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{cpu_description()}, freed memory {'reused' if reuse else 'returned (default)'})")
    write(f"{'claim':<78} {'larger':>10} {'smaller':>10} {'ratio':>7} {'target':>7}")
    for claim, larger, smaller, ratio in rows:
        met = claim.met(ratio)
        verdict = "" if met is None else (" met" if met else " MISSED")
        write(f"{claim.what:<78} {shown(claim.group, larger):>10} {shown(claim.group, smaller):>10} {ratio:>6.2f}x "
              f"{claim.target_text():>7}{verdict}")
    for limit, value in limits:
        verdict = "met" if value <= limit.limit else "MISSED"
        write(f"{limit.what:<78} {shown(limit.group, value):>10} (limit {shown(limit.group, limit.limit)}) {verdict}")
    compiles = {k: v for k, v in RESULTS.items() if k[1].endswith(" compile")}
    for (group, variant), seconds in sorted(compiles.items()):
        write(f"  {group}: {variant} time (first call) {seconds:.1f} s")
    _write_json(rows, limits, compiles, reuse)


def _write_json(rows, limits, compiles, reuse: bool) -> None:
    data = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "reuse_freed_memory": reuse,
        "medians": {f"{g} | {v}": t for (g, v), t in RESULTS.items()},
        "ratios": [{"claim": c.what, "unit": unit(c.group), "larger": a, "smaller": b, "ratio": r,
                    "target": c.target_text(), "met": c.met(r)} for c, a, b, r in rows],
        "limits": [{"claim": lim.what, "unit": unit(lim.group), "value": v, "limit": lim.limit,
                    "met": v <= lim.limit} for lim, v in limits],
        "compile_seconds": {f"{g} | {v}": t for (g, v), t in compiles.items()},
    }
    write_text_atomic(Path(".benchmarks") / "ratios.json", json.dumps(data, indent=2))
