"""Writes docs/benchmarks.md from the last run's .benchmarks/ratios.json (never by hand).

    pytest benchmarks/ && python -m benchmarks.report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.profile import format_records
from pyairir._files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent


def _value(value: float, unit: str) -> str:
    return f"{value:.0f} MB" if unit == "MB" else f"{value * 1e3:.1f} ms"


def _ratio_row(row: dict) -> str:
    verdict = "" if row["met"] is None else (" (met)" if row["met"] else " (**missed**)")
    return (f"| {row['claim']} | {_value(row['larger'], row['unit'])} | {_value(row['smaller'], row['unit'])} | "
            f"{row['ratio']:.2f}x | {row['target']}{verdict} |")


def _limit_row(row: dict) -> str:
    return (f"| {row['claim']} | {_value(row['value'], row['unit'])} | {_value(row['limit'], row['unit'])} "
            f"({'met' if row['met'] else '**missed**'}) |")


RATIO_HEADER = ["| claim | larger | smaller | ratio | target |", "|---|---:|---:|---:|---:|"]
LIMIT_HEADER = ["| claim | value | limit |", "|---|---:|---:|"]


def _huge_pages(data: dict) -> str:
    if "huge_pages" not in data:  # runs before the field was recorded
        return ""
    return f", huge pages {'on' if data['huge_pages'] else 'off'} (`pyairir.runtime.huge_pages()`)"


def _bf16_mode(data: dict) -> str:
    if "float32_for_bf16" not in data:  # runs before the field was recorded
        return ""
    if data["float32_for_bf16"]:
        return ("; this CPU has no bf16 arithmetic, so the fast bf16 models computed their layers in fp32 "
                "from the bf16 weights and activations (`pyairir.runtime.float32_for_bf16()`; README, bf16)")
    return "; the fast bf16 models computed in bf16 (`pyairir.runtime.float32_for_bf16()` off)"


def render(data: dict) -> str:
    missed_ratios = [row for row in data["ratios"] if row["met"] is False]
    missed_limits = [row for row in data.get("limits", []) if not row["met"]]
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.report` from what `pytest benchmarks/` measured in one run "
        f"({data.get('date', 'date not recorded')}; torch {data['torch']}, {data['threads']} threads, "
        f"{data.get('cpu', data['machine'])}, "
        f"{'with' if data['reuse_freed_memory'] else 'without'} `pyairir.runtime.reuse_freed_memory()`"
        f"{_huge_pages(data)}). "
        "Times are medians, memory is peak RSS of a fresh process; a ratio is larger / smaller. The "
        "variants of a whole model (benchmarks/test_models.py) are timed interleaved: 5 rounds, each "
        "variant once a round in a shuffled order, so that a busy phase of the machine falls on all "
        "of them alike (the variant without the memory cache runs after the rounds, on its own).",
        "",
        "Baselines: \"official\" is the official code's structure (tests/official_like.py: the official "
        "classes' computations, state_dict keys and outputs, checked by tests/test_official_like.py) holding "
        "the same weights as the fast model; `torch.compile` compiles that official structure (default "
        "options, and `freezing=True`); bf16 rows compare the same bf16 weights, autocast rows fp32 weights "
        f"under `torch.autocast`{_bf16_mode(data)}. The op baselines are the official computations the ops replace "
        "(pyairir.reference, written as the official code computes; LUPI's FiLM has no official code).",
        "",
    ]
    if missed_ratios or missed_limits:
        lines += [f"## Missed targets ({len(missed_ratios) + len(missed_limits)})", ""]
        if missed_ratios:
            lines += RATIO_HEADER + [_ratio_row(row) for row in missed_ratios] + [""]
        if missed_limits:
            lines += LIMIT_HEADER + [_limit_row(row) for row in missed_limits] + [""]
    else:
        lines += ["Every target was met in this run.", ""]
    lines += ["## All ratios", ""] + RATIO_HEADER + [_ratio_row(row) for row in data["ratios"]]
    if data.get("limits"):
        lines += [""] + LIMIT_HEADER + [_limit_row(row) for row in data["limits"]]
    profiles = {name: profile for name, profile in data.get("profiles", {}).items() if name != "machine"}
    if profiles:
        machine = data["profiles"]["machine"]
        lines += ["", "## Where the time goes (fast models, fp32, 3x256x256)", "",
                  f"Measured by benchmarks/profile.py on this machine, whose roofline is "
                  f"{machine['matmul_gflops']:.0f} GFLOP/s (a 2048x2048 fp32 matmul) and {machine['copy_gbs']:.1f} GB/s "
                  "(a 256 MB copy). Per op kind: time, share of the forward, achieved rate, and the fraction of "
                  "min(peak, bandwidth x FLOPs / bytes) it reaches."]
        for name, profile in profiles.items():
            lines += ["", f"### {name}: {profile['total_ms']:.0f} ms", ""] + format_records(profile["ops"])
    preparation = data["preparation_seconds"]
    if preparation:
        lines += ["", "One-off preparation (torch.compile's first call: tracing and code generation; ONNX export; "
                  "int8 quantization):",
                  ""]
        lines += [f"- {name}: {seconds:.1f} s" for name, seconds in sorted(preparation.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    source = ROOT / ".benchmarks" / "ratios.json"
    if not source.is_file():
        sys.exit(f"{source} does not exist: run `pytest benchmarks/` first")
    text = render(json.loads(source.read_text()))
    target = ROOT / "docs" / "benchmarks.md"
    write_text_atomic(target, text)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
