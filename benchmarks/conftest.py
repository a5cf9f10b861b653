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
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyairir  # first, as users import it: before torch, so that torch allocates on huge pages  # noqa: I001
import pytest
import torch
from pyairir._files import write_text_atomic

from benchmarks.machine import cpu_description

# Report torch.compile's cold compile time (as a first-time user sees it), not a cache hit
# from an earlier run: a fresh inductor cache for the session.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="pyairir-benchmarks-inductor-"))
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

# (group, variant) -> median seconds (megabytes of peak RSS for groups ending in "peak RSS");
RESULTS: dict[tuple[str, str], float] = {}
# (group, what) -> seconds of a one-off preparation: torch.compile's first call, an ONNX export.
PREPARATION: dict[tuple[str, str], float] = {}
# model -> {"total_ms", "ops": per-op records of benchmarks/profile.py}; "machine" -> its roofline.
PROFILES: dict[str, dict] = {}


@dataclass(frozen=True)
class Claim:
    """What `pytest benchmarks/` checks: the ratio of two variants of one group, larger / smaller
    (time or memory), at least `target` (or at most, for claims that something stays flat)."""

    what: str
    group: str
    larger: str | tuple[str, ...]  # several: the fastest (smallest) of them
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
    Claim("MDTA op with qkv_dwconv and project_out fused vs oneDNN's convs around the op, 288x256x256 "
          "channels_last", "mdta inference", "convs + op", "op with the convs fused", 1.2),
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
    Claim("AdaIR fast fp32 vs official eager fp32, 3x256x256", "adair inference", "official eager fp32", "fast fp32",
          2.5),
    Claim("AdaIR fast fp32 vs torch.compile fp32", "adair inference", "compile fp32", "fast fp32", 1.0),
    Claim("AdaIR fast bf16 vs official eager + bf16 autocast", "adair inference", "official eager bf16 autocast",
          "fast bf16", 2.5),
    Claim("AdaIR fast bf16 vs torch.compile + bf16 autocast", "adair inference", "compile bf16 autocast",
          "fast bf16", 1.0),
    Claim("NAFNet-SIDD-w32 fast fp32 vs official eager fp32, 3x256x256", "nafnet inference", "official eager fp32",
          "fast fp32"),
    Claim("NAFNet-SIDD-w32 fast fp32 vs torch.compile fp32", "nafnet inference", "compile fp32", "fast fp32"),
    *(claim for name, title, peer_target in (("promptir", "PromptIR", 1.5), ("restormer", "Restormer", 1.5),
                                             ("nafnet", "NAFNet-SIDD-w32", 1.3), ("adair", "AdaIR", None))
      for claim in (
        Claim(f"{title} fast fp32 vs the faster of ONNX Runtime and OpenVINO fp32", f"{name} inference",
              ("onnxruntime fp32", "openvino fp32"), "fast fp32", peer_target),
        Claim(f"{title} fast fp32 vs ONNX Runtime fp32", f"{name} inference", "onnxruntime fp32", "fast fp32"),
        Claim(f"{title} fast fp32 vs OpenVINO fp32", f"{name} inference", "openvino fp32", "fast fp32"),
        Claim(f"{title} fast bf16 vs OpenVINO bf16", f"{name} inference", "openvino bf16", "fast bf16"),
        Claim(f"{title} fast fp32 vs ONNX Runtime int8 (not like for like)", f"{name} inference", "onnxruntime int8",
              "fast fp32"),
        Claim(f"{title} fast fp32 vs OpenVINO int8 (not like for like)", f"{name} inference", "openvino int8",
              "fast fp32"),
        Claim(f"{title} accelerate() on the official structure / fast model, fp32 (within 10%)", f"{name} inference",
              "accelerate fp32", "fast fp32", 1.1, at_most=True),
    )),
    *(Claim(f"{title} fast fp32: without / with pyairir.runtime's memory cache", f"{name} inference",
            "fast fp32 without memory cache", "fast fp32")
      for name, title in (("promptir", "PromptIR"), ("restormer", "Restormer"), ("adair", "AdaIR"),
                          ("nafnet", "NAFNet-SIDD-w32"))),
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


def interleaved(group: str, fns: dict[str, Callable[[], object]], rounds: int = 5, warmup_rounds: int = 1) -> dict[str, float]:
    """Times every callable once per round for `rounds` rounds after `warmup_rounds` untimed ones,
    and records each one's median under (group, variant). A slow phase of a shared machine (this
    VM's throughput drifts by 30 % and more over minutes) then falls on every variant of a round
    alike, instead of on whichever variant's benchmark happened to run then. Each round takes the
    variants in its own (seeded, shuffled) order: a pass right after the official eager one ran
    10-20 % slower here (PromptIR, fast or accelerate()), so no variant may always follow the same one."""
    times: dict[str, list[float]] = {variant: [] for variant in fns}
    order = random.Random(0)
    for r in range(warmup_rounds + rounds):
        variants = list(fns)
        order.shuffle(variants)
        for variant in variants:
            start = time.perf_counter()
            fns[variant]()
            if r >= warmup_rounds:
                times[variant].append(time.perf_counter() - start)
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    RESULTS.update({(group, variant): median for variant, median in medians.items()})
    return medians


def record_preparation_time(group: str, what: str, prepare):
    """Times a one-off preparation (the first call of a torch.compile'd function: tracing and code
    generation; an ONNX export) and returns what `prepare()` returns."""
    start = time.perf_counter()
    result = prepare()
    record_preparation(group, what, time.perf_counter() - start)
    return result


def record_preparation(group: str, what: str, seconds: float) -> None:
    """Records a one-off preparation timed by the caller (for a label that needs its result)."""
    PREPARATION[(group, what)] = seconds


def _rows():
    for claim in TARGETS:
        names = (claim.larger,) if isinstance(claim.larger, str) else claim.larger
        measured = [RESULTS[(claim.group, name)] for name in names if (claim.group, name) in RESULTS]
        smaller = RESULTS.get((claim.group, claim.smaller))
        if measured and smaller is not None:
            yield claim, min(measured), smaller, min(measured) / smaller


def _limits():
    for limit in LIMITS:
        if (limit.group, limit.variant) in RESULTS:
            yield limit, RESULTS[(limit.group, limit.variant)]


def pytest_terminal_summary(terminalreporter):
    rows, limits = list(_rows()), list(_limits())
    if not rows and not limits and not PROFILES:
        return
    write = terminalreporter.write_line
    write("")
    reuse, huge = terminalreporter.config.getoption("--reuse-freed-memory"), pyairir.runtime.huge_pages()
    write(f"pyairir speed and memory ratios (one run; {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{cpu_description()}, freed memory {'reused' if reuse else 'returned (default)'}, "
          f"huge pages {'on' if huge else 'off'})")
    write(f"{'claim':<78} {'larger':>10} {'smaller':>10} {'ratio':>7} {'target':>7}")
    for claim, larger, smaller, ratio in rows:
        met = claim.met(ratio)
        verdict = "" if met is None else (" met" if met else " MISSED")
        write(f"{claim.what:<78} {shown(claim.group, larger):>10} {shown(claim.group, smaller):>10} {ratio:>6.2f}x "
              f"{claim.target_text():>7}{verdict}")
    for limit, value in limits:
        verdict = "met" if value <= limit.limit else "MISSED"
        write(f"{limit.what:<78} {shown(limit.group, value):>10} (limit {shown(limit.group, limit.limit)}) {verdict}")
    for (group, what), seconds in sorted(PREPARATION.items()):
        write(f"  {group}: {what}: {seconds:.1f} s")
    for name, profile in PROFILES.items():
        if name != "machine":
            from benchmarks.profile import format_records

            write(f"profile of fast {name} (fp32, 3x256x256): {profile['total_ms']:.0f} ms")
            for line in format_records(profile["ops"][:8]):
                write("  " + line)
    _write_json(rows, limits, reuse, huge)


def _write_json(rows, limits, reuse: bool, huge_pages: bool) -> None:
    data = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "reuse_freed_memory": reuse, "huge_pages": huge_pages, "float32_for_bf16": pyairir.runtime.float32_for_bf16(),
        "medians": {f"{g} | {v}": t for (g, v), t in RESULTS.items()},
        "ratios": [{"claim": c.what, "unit": unit(c.group), "larger": a, "smaller": b, "ratio": r,
                    "target": c.target_text(), "met": c.met(r)} for c, a, b, r in rows],
        "limits": [{"claim": lim.what, "unit": unit(lim.group), "value": v, "limit": lim.limit,
                    "met": v <= lim.limit} for lim, v in limits],
        "preparation_seconds": {f"{g} | {w}": t for (g, w), t in PREPARATION.items()},
        "profiles": PROFILES,
    }
    write_text_atomic(Path(".benchmarks") / "ratios.json", json.dumps(data, indent=2))
