"""docs/benchmarks.md lists the missed targets first (benchmarks/report.py)."""

from __future__ import annotations

from benchmarks.report import render


def row(claim: str, met: bool | None) -> dict:
    return {"claim": claim, "unit": "s", "larger": 2.0, "smaller": 1.0, "ratio": 2.0, "target": ">=3", "met": met}


def test_missed_targets_come_first():
    data = {"torch": "2.13.0", "threads": 2, "machine": "x86_64", "cpu": "a CPU", "reuse_freed_memory": False,
            "ratios": [row("kept", True), row("short", False), row("untargeted", None)],
            "limits": [{"claim": "memory", "unit": "MB", "value": 9000.0, "limit": 8192.0, "met": False}],
            "preparation_seconds": {}}
    text = render(data)
    missed, everything = text.split("## All ratios")
    assert "## Missed targets (2)" in missed and "| short |" in missed and "| memory |" in missed
    assert "| kept |" not in missed and "| untargeted |" not in missed
    assert all(f"| {name} |" in everything for name in ("kept", "short", "untargeted", "memory"))
    assert "a CPU" in text


def test_a_run_without_misses_says_so():
    data = {"torch": "2.13.0", "threads": 2, "machine": "x86_64", "reuse_freed_memory": False,
            "ratios": [row("kept", True)], "limits": [], "preparation_seconds": {}}
    assert "Every target was met in this run." in render(data)
