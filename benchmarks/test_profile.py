"""Per-op profiles of the fast PromptIR, Restormer and NAFNet at 3x256x256 (fp32) against each op's
roofline on this machine (benchmarks/profile.py), written with the run's ratios."""

from __future__ import annotations

import pytest
import torch

import pyairir
from benchmarks.conftest import PROFILES
from benchmarks.profile import machine_roofline, profile_model, table

SIZE = 256


@pytest.fixture(scope="module")
def roofline() -> tuple[float, float]:
    peak, bandwidth = machine_roofline()
    PROFILES["machine"] = {"matmul_gflops": peak, "copy_gbs": bandwidth}
    return peak, bandwidth


@pytest.mark.parametrize("name", ["promptir", "restormer", "nafnet_sidd_w32"])
def test_profile(roofline, name):
    torch.manual_seed(0)
    model = pyairir.create_model(name, fast=True).eval()
    rows, total = profile_model(model, torch.rand(1, 3, SIZE, SIZE))
    PROFILES[name] = {"total_ms": total * 1e3, "ops": table(rows, total, *roofline)}
