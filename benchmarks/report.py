"""Writes docs/benchmarks.md from the last run's .benchmarks/ratios.json (never by hand).

    pytest benchmarks/ && python -m benchmarks.report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyairir._files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent


def _value(value: float, unit: str) -> str:
    return f"{value:.0f} MB" if unit == "MB" else f"{value * 1e3:.1f} ms"


def render(data: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.report` from what `pytest benchmarks/` measured in one run "
        f"(torch {data['torch']}, {data['threads']} threads, {data['machine']}, "
        f"{'with' if data['reuse_freed_memory'] else 'without'} `pyairir.runtime.reuse_freed_memory()`). "
        "Times are medians, memory is peak RSS of a fresh process; a ratio is larger / smaller.",
        "",
        "| claim | larger | smaller | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data["ratios"]:
        verdict = "" if row["met"] is None else (" (met)" if row["met"] else " (missed)")
        lines.append(f"| {row['claim']} | {_value(row['larger'], row['unit'])} | "
                     f"{_value(row['smaller'], row['unit'])} | {row['ratio']:.2f}x | {row['target']}{verdict} |")
    if data.get("limits"):
        lines += ["", "| claim | value | limit |", "|---|---:|---:|"]
        lines += [f"| {row['claim']} | {_value(row['value'], row['unit'])} | {_value(row['limit'], row['unit'])} "
                  f"({'met' if row['met'] else 'missed'}) |" for row in data["limits"]]
    if data["compile_seconds"]:
        lines += ["", "torch.compile time (first call, tracing and code generation):", ""]
        lines += [f"- {name}: {seconds:.1f} s" for name, seconds in sorted(data["compile_seconds"].items())]
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
