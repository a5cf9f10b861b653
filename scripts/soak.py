"""Soaks for docs/reliability.md: what happens over many restorations and under kill -9.

    python scripts/soak.py restore [--count 1000]      many restorations in one process: RSS growth
    python scripts/soak.py kill [--kills 20]           a training run killed at random moments
                                                       (and inside checkpoint writes), resumed each
                                                       time, against an uninterrupted run
    python scripts/soak.py concurrent                   two runs started into one output folder

Each prints one markdown table row per check and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_NAFNET = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak_restore(count: int) -> bool:
    """`count` restorations of 96x128 photos with the fast demo model; RSS after the first 50
    (warm-up) against RSS at the end."""
    from pyairir.demo import load_demo_model
    from pyairir.eval import restore

    model = load_demo_model(fast=True)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    warm = None
    for i in range(count):
        image = torch.rand(3, 96, 128, generator=generator)
        out = restore(model, image)
        assert out.shape == image.shape and torch.isfinite(out).all()
        if i == 49:
            warm = rss_bytes()
    end = rss_bytes()
    growth = (end - warm) / warm
    ok = growth <= 0.05
    print(f"| {count} restorations, fast demo model, 96x128 | RSS {warm / 2 ** 20:.0f} MiB after 50, "
          f"{end / 2 ** 20:.0f} MiB after {count} ({100 * growth:+.1f} %), {time.perf_counter() - started:.0f} s | "
          f"{'ok' if ok else 'FAILED: more than 5 %'} |")
    return ok


def photos(folder: Path) -> Path:
    from pyairir.data import write_image

    for i in range(3):
        y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 56), indexing="ij")
        write_image(folder / f"{i}.png", torch.stack([x, y, (x * y + 0.3 * i) % 1]))
    return folder


def config_file(folder: Path, name: str, steps: int, data: Path) -> Path:
    settings = dict(model="nafnet_sidd_w32", model_args=TINY_NAFNET, data=str(data), benchmark="synthetic",
                    patch_size=32, batch_size=4, steps=steps, lr=1e-3, checkpoint_every=5, out=str(folder / name),
                    progress=False)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def train(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pyairir.train", str(config), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(run: Path, steps: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / f"checkpoint-{steps}" / "model.safetensors")


def soak_kill(kills: int, steps: int = 200, seed: int = 0) -> bool:
    """An uninterrupted run, then the same run SIGKILLed `kills` times at random moments (about a
    third of them timed to land while a checkpoint is being written), resumed after each kill."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = photos(folder / "photos")
        reference = train(config_file(folder, "reference", steps, data))
        assert reference.wait() == 0, reference.stderr.read()
        killed_config = config_file(folder, "killed", steps, data)
        run = folder / "killed"
        done, during_write, resumes = 0, 0, 0
        process = train(killed_config)
        while done < kills:
            if rng.random() < 1 / 3:  # wait for a checkpoint being written: its temporary folder
                deadline = time.time() + 30
                while time.time() < deadline and not any(p.name.endswith(".tmp") for p in run.glob(".checkpoint-*")):
                    time.sleep(0.001)
                during_write += any(p.name.endswith(".tmp") for p in run.glob(".checkpoint-*"))
            else:
                time.sleep(rng.uniform(0.3, 3.0))
            if process.poll() is not None:
                break  # finished before the kill
            process.send_signal(signal.SIGKILL)
            process.wait()
            done += 1
            process = train(killed_config, "--resume")
            resumes += 1
        status = process.wait()
        same = status == 0 and all(torch.equal(a, b) for a, b in zip(weights(folder / "reference", steps).values(),
                                                                      weights(run, steps).values()))
        print(f"| kill -9 soak: {done} kills ({during_write} inside a checkpoint write), {resumes} resumes, "
              f"{steps} steps | final weights {'bit-identical to' if same else 'DIFFERENT from'} the uninterrupted "
              f"run's | {'ok' if same else 'FAILED'} |")
        return same


def soak_concurrent() -> bool:
    """Two runs started together into one folder: one trains, the other is refused at once."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = photos(folder / "photos")
        config = config_file(folder, "shared", 60, data)
        first, second = train(config), train(config)
        statuses = sorted([first.wait(), second.wait()])
        errors = first.stderr.read() + second.stderr.read()
        ok = statuses == [0, 1] and ("in use by another training process" in errors or "already holds a run" in errors)
        latest = (folder / "shared" / "latest").read_text() if (folder / "shared" / "latest").is_file() else None
        ok = ok and latest == "checkpoint-60"
        print(f"| two runs into one folder | exit statuses {statuses}, latest {latest!r} | "
              f"{'ok' if ok else 'FAILED'} |")
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="soak", required=True)
    sub.add_parser("restore").add_argument("--count", type=int, default=1000)
    sub.add_parser("kill").add_argument("--kills", type=int, default=20)
    sub.add_parser("concurrent")
    args = parser.parse_args()
    if args.soak == "restore":
        return 0 if soak_restore(args.count) else 1
    if args.soak == "kill":
        return 0 if soak_kill(args.kills) else 1
    return 0 if soak_concurrent() else 1


if __name__ == "__main__":
    sys.exit(main())
