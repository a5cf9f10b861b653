"""The paradigms on real image sizes: SIPL-PromptIR's guided pass at 512x512 (time, and peak
memory in a fresh process) against the official structure with the same weights, a refinement
iteration with the cached encoder, and a 2-iteration restore at 1024x1024 within 8 GB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import RESULTS
from benchmarks.sipl_run import guided_pass, sipl_promptir

ROOT = Path(__file__).resolve().parent.parent


def run_in_fresh_process(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.sipl_run", *args], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.sipl_run {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["official eager", "fast"])
def test_sipl_guided_pass(measure, variant):
    run = guided_pass(variant == "fast", 512)
    with torch.no_grad():
        measure("sipl guided pass 512", variant, run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("variant", ["official eager", "fast"])
def test_sipl_guided_pass_peak_memory(variant):
    flags = ["--fast"] if variant == "fast" else []
    result = run_in_fresh_process("--size", "512", "--what", "guided", *flags)
    RESULTS[("sipl guided pass 512 peak RSS", variant)] = result["peak_rss_mb"]


def test_sipl_restore_1024_peak_memory():
    result = run_in_fresh_process("--size", "1024", "--what", "restore", "--iterations", "2", "--fast")
    RESULTS[("sipl restore 1024 peak RSS", "fast")] = result["peak_rss_mb"]
    RESULTS[("sipl restore 1024", "fast")] = result["seconds"]


@pytest.mark.parametrize("variant", ["full pass", "cached encoder"])
def test_sipl_refinement(measure, variant):
    """One refinement of the paper's loop, I^(t) = F(I_d, I^(t-1)): with every encoder pass run
    again, or with I_d's encoding computed once (what SIPL.restore does)."""
    model = sipl_promptir(fast=True)
    generator = torch.Generator().manual_seed(0)
    degraded, previous = (torch.rand(1, 3, 256, 256, generator=generator) for _ in range(2))
    with torch.no_grad():
        encoded = model.backbone.encode(degraded)

        if variant == "full pass":
            refine = lambda: model(degraded, model.privileged_features(previous, restore=False))  # noqa: E731
        else:
            refine = lambda: model.refine(encoded, previous)  # noqa: E731
        measure("sipl refinement 256", variant, refine, rounds=3)
