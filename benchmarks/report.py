"""Writes docs/benchmarks.md from the last run's .benchmarks/ratios.json (never by hand).

    pytest benchmarks/ && python -m benchmarks.report
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(data: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.report` from the ratios `pytest benchmarks/` measured in one run "
        f"(torch {data['torch']}, {data['threads']} threads, {data['machine']}, "
        f"{'with' if data['reuse_freed_memory'] else 'without'} `pyairir.runtime.reuse_freed_memory()`). "
        "Times are medians; a ratio is slower / faster.",
        "",
        "| claim | slower | faster | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data["ratios"]:
        target = "-" if row["target"] is None else (
            f">= {row['target']:g} ({'met' if row['ratio'] >= row['target'] else 'missed'})")
        lines.append(f"| {row['claim']} | {row['slower_s'] * 1e3:.1f} ms | {row['faster_s'] * 1e3:.1f} ms | "
                     f"{row['ratio']:.2f}x | {target} |")
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
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
