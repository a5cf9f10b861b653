"""The `pyairir` command: restore round trips, clear errors and exit codes, eval, demo, bench."""

from __future__ import annotations

import json
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


def test_sipl_demo_runs_offline_on_its_own_tasks(tmp_path):
    info = json.loads((ROOT / "pyairir" / "weights" / "demo_sipl.json").read_text())
    result = pyairir("demo", "--paradigm", "sipl")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert list(rows) == [*info["degradations"], "average"]  # the tasks it was trained on, composites too
    assert float(rows["average"][-1].removesuffix("dB")) > 3.0, result.stdout  # its weights restore
    source = photo(tmp_path / "in.png")
    for iterations in ("0", "2"):  # pyairir restore --paradigm sipl takes the SIPL demo, and refines with it
        result = pyairir("restore", str(source), "-o", str(tmp_path / f"out{iterations}.png"), "--paradigm", "sipl",
                         "--iterations", iterations)
        assert result.returncode == 0, result.stderr
    assert not torch.equal(read_image(tmp_path / "out0.png"), read_image(tmp_path / "out2.png"))


def test_demo_model_for_another_paradigm_is_a_clear_error(tmp_path):
    result = pyairir("restore", str(photo(tmp_path / "in.png")), "-o", str(tmp_path / "out.png"), "--paradigm", "lupi")
    assert result.returncode == 1
    assert "ships demo models for --paradigm none, sipl only" in result.stderr and "Traceback" not in result.stderr
    from pyairir.demo import load_demo_model

    with pytest.raises(ValueError, match="no demo model for paradigm 'cpl'"):
        load_demo_model(paradigm="cpl")


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


def restore_in_process(*args: str) -> int:
    from pyairir.cli import main

    return main(["restore", *args])


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    source = photo(tmp_path / "in.png")
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    assert restore_in_process(str(source), "-o", str(target)) == 1
    assert "out.png already exists; pass --overwrite to replace" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"
    target.chmod(0o640)
    assert restore_in_process(str(source), "-o", str(target), "--overwrite") == 0
    assert read_image(target).shape == read_image(source).shape
    assert target.stat().st_mode & 0o777 == 0o640  # the file keeps the permissions it had
    target.chmod(0o444)
    assert restore_in_process(str(source), "-o", str(target), "--overwrite") == 1
    assert "out.png is read-only: not replacing it" in capsys.readouterr().err


def test_output_file_names(tmp_path, capsys):
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    assert restore_in_process(str(a), str(b), "-o", str(tmp_path / "new.png")) == 1
    assert "2 inputs cannot go into one image file; give a folder" in capsys.readouterr().err
    assert restore_in_process(str(a), "-o", str(tmp_path / "x.gif")) == 1
    assert "not .gif (for a folder, give a name without a suffix)" in capsys.readouterr().err
    assert not (tmp_path / "new.png").exists() and not (tmp_path / "x.gif").exists()


def test_a_batch_goes_on_past_bad_images(tmp_path, capsys, monkeypatch):
    """Unreadable images and failed writes are reported with their path; the others are restored
    and the exit status counts the failures. A killed write's temporary file is no input."""
    folder = tmp_path / "in"
    for name in ("a.png", "d.png"):
        photo(folder / name)
    Image.fromarray(np.full((16, 16), 2 ** 20, dtype=np.int32), mode="I").save(folder / "b.tif")
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(50))
    (folder / ".e.png.abcd1234.png").write_bytes(b"")  # left by a write killed mid-way
    import pyairir.data.io as io

    real_write = io.write_image

    def write(path, image, icc_profile=None):
        if Path(path).name == "d.png":
            raise PermissionError(13, "Permission denied", str(path))
        real_write(path, image, icc_profile)

    monkeypatch.setattr(io, "write_image", write)
    assert restore_in_process(str(folder), "-o", str(tmp_path / "out")) == 3
    err = capsys.readouterr().err
    assert "b.tif: image" in err and "values outside 0..65535" in err
    assert "c.jpg: image" in err and "could not be read" in err
    assert "d.png: [Errno 13] Permission denied" in err
    assert "3 of 4 images failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_a_model_that_outputs_nan_writes_nothing(tmp_path, capsys, monkeypatch):
    import pyairir.cli as cli

    monkeypatch.setattr(cli, "_model", lambda args: (lambda x: x * float("nan")))
    source = photo(tmp_path / "in.png")
    assert restore_in_process(str(source), "-o", str(tmp_path / "out.png")) == 1
    assert "output is not finite (NaN or Inf)" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("tile, overlap", [("0", "32"), ("1", "0"), ("8", "8"), ("40", "-1")])
def test_tiles_below_the_minimum_are_refused(tmp_path, capsys, tile, overlap):
    source = photo(tmp_path / "in.png")
    assert restore_in_process(str(source), "-o", str(tmp_path / "o.png"), "--tile", tile, "--overlap", overlap) == 1
    assert "tile must be at least" in capsys.readouterr().err


def test_orientation_and_colour_profile_are_kept(tmp_path):
    """A phone photo stored sideways with an EXIF orientation comes out upright, with its ICC profile."""
    from PIL import ImageCms

    pixels = (np.arange(20 * 30 * 3) % 251).astype(np.uint8).reshape(20, 30, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(source, exif=exif, icc_profile=profile, quality=100)
    assert read_image(source).shape == (3, 30, 20)  # upright: the stored 20x30 turned a quarter
    target = tmp_path / "out.png"
    assert restore_in_process(str(source), "-o", str(target)) == 0
    with Image.open(target) as restored:
        assert restored.size == (20, 30) and restored.info.get("icc_profile") == profile


def test_eval_keeps_what_it_measured_when_an_image_fails_mid_run(tmp_path, monkeypatch, capsys):
    from pyairir.cli import main
    from pyairir.data import RestorationDataset

    data = make_test_tree(tmp_path)
    original = RestorationDataset.__getitem__

    def fails_once(self, item):
        if self.entries[item].task == "derain" and item == 1:
            raise ValueError("derain: the file changed since it was checked")
        return original(self, item)

    monkeypatch.setattr(RestorationDataset, "__getitem__", fails_once)
    status = main(["eval", "--data", str(data), "--benchmark", "5task", "--model", "demo", "--json",
                   str(tmp_path / "r.json")])
    assert status == 1
    assert "pyairir eval: skipped: derain: the file changed since it was checked" in capsys.readouterr().err
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["derain"]["count"] == 1 and results["enhance"]["count"] == 2
