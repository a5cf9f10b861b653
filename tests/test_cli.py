"""The `pyairir` command: restore round trips, clear errors and exit codes, eval, demo, bench."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyairir.data import read_image, write_image
from tests.data.tree import make_test_tree

ROOT = Path(__file__).resolve().parent.parent


def pyairir(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "pyairir", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def photo(path: Path, h: int = 45, w: int = 61) -> Path:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    write_image(path, torch.stack([x, y, 1 - x * y]))
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_restore_round_trip(tmp_path, suffix):
    source = photo(tmp_path / f"in{suffix}")
    target = tmp_path / "out" / f"restored{suffix}"
    result = pyairir("restore", str(source), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert read_image(target).shape == read_image(source).shape
    assert Image.open(target).format == ("PNG" if suffix == ".png" else "JPEG")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not the temporary file's 0600


def test_restore_sipl_in_tiles_with_iterations(tmp_path):
    source = photo(tmp_path / "in.png")
    result = pyairir("restore", str(source), "-o", str(tmp_path / "out.png"), "--model", "restormer", "--paradigm",
                     "sipl", "--tile", "32", "--overlap", "8", "--iterations", "1")
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "out.png").shape == read_image(source).shape


def test_restore_folder(tmp_path):
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.jpg", 30, 20)
    result = pyairir("restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.jpg"]


def test_never_overwrites_an_input(tmp_path):
    source = photo(tmp_path / "x.png")
    before = source.read_bytes()
    result = pyairir("restore", str(source), "-o", str(source))
    assert result.returncode == 1 and "refusing to overwrite the input" in result.stderr
    result = pyairir("restore", str(source), "-o", str(tmp_path))  # the folder holding it
    assert result.returncode == 1 and "refusing to overwrite the input" in result.stderr
    assert source.read_bytes() == before


def test_corrupt_and_missing_images_are_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    result = pyairir("restore", str(corrupt), "-o", str(tmp_path / "o.png"))
    assert result.returncode != 0 and "could not be read (corrupt or not an image)" in result.stderr
    result = pyairir("restore", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png"))
    assert result.returncode == 1 and "no such file or folder" in result.stderr
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8)).save(rgba)
    result = pyairir("restore", str(rgba), "-o", str(tmp_path / "o.png"))
    assert result.returncode != 0 and "alpha channel" in result.stderr


def test_bad_model_and_usage(tmp_path):
    source = photo(tmp_path / "x.png")
    result = pyairir("restore", str(source), "-o", str(tmp_path / "y.png"), "--model", "unet9000")
    assert result.returncode == 1 and "unknown model 'unet9000'" in result.stderr
    result = pyairir("restore", str(source))
    assert result.returncode == 2 and "-o/--output" in result.stderr


def test_eval_on_a_tiny_benchmark(tmp_path):
    data = make_test_tree(tmp_path)
    result = pyairir("eval", "--data", str(data), "--benchmark", "5task", "--model", "demo",
                     "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    for task in ("denoise_25", "derain", "dehaze", "deblur", "enhance", "average"):
        assert f"| {task} |" in result.stdout
    assert (tmp_path / "plots" / "psnr_per_task.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_gains_psnr(tmp_path):
    result = pyairir("demo", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    average = [line for line in result.stdout.splitlines() if line.startswith("average")][0]
    gain = float(average.split()[-1].removesuffix("dB"))
    assert gain > 3.0, result.stdout  # the shipped weights restore what they were trained for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_chelsea.png", "demo_coffee.png"]


def test_bench_runs():
    result = pyairir("bench", "--model", "nafnet_demo", "--size", "32", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    assert "fast fp32" in result.stdout and "eager fp32" in result.stdout


def test_eval_plots_sipl_iterations_and_cpl_prompts(tmp_path):
    data = make_test_tree(tmp_path)
    result = pyairir("eval", "--data", str(data), "--model", "restormer", "--paradigm", "sipl", "--iterations", "1",
                     "--plot", str(tmp_path / "sipl"))
    assert result.returncode == 0, result.stderr
    assert "random weights" in result.stderr
    assert (tmp_path / "sipl" / "psnr_per_iteration.png").is_file()
    result = pyairir("eval", "--data", str(data), "--model", "promptir", "--paradigm", "cpl", "--plot",
                     str(tmp_path / "cpl"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cpl" / "prompt_selection.png").is_file()
