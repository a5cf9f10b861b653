"""Trains pyairir's demo model on CPU and writes pyairir/weights/demo.{safetensors,json}.

    python scripts/train_demo.py [--steps 4000] [--threads 1]

The photos are scikit-image's bundled samples (no download); the two in
pyairir.demo.HELD_OUT_PHOTOS are never trained on and serve as the demo. Degradations are the
five synthetic ones of pyairir.data.degradations. Resumable: rerun to continue from runs/demo.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from pyairir._files import atomic_path, write_text_atomic
from pyairir.data.io import write_image
from pyairir.demo import TRAINING_PHOTOS, WEIGHTS, format_results, run_demo, sample_photo
from pyairir.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as photos:
        for name in TRAINING_PHOTOS:
            write_image(Path(photos) / f"{name}.png", sample_photo(name))
        config = TrainConfig(model="nafnet_demo", fast=True, data=photos, benchmark="synthetic", patch_size=128,
                             batch_size=8, steps=args.steps, lr=1e-3, min_lr=1e-5, betas=(0.9, 0.9),
                             weight_decay=0.0, warmup_steps=200, seed=0, out=args.out, checkpoint_every=250)
        model = train(config, resume=True).model.eval()
    WEIGHTS.mkdir(exist_ok=True)
    with atomic_path(WEIGHTS / "demo.safetensors") as temporary:
        save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, temporary)
    info = {"model": config.model, "model_args": config.model_args, "weights": "demo.safetensors",
            "trained_on": list(TRAINING_PHOTOS), "degradations": list(config.synthetic_kinds), "steps": config.steps,
            "batch_size": config.batch_size, "patch_size": config.patch_size, "seed": config.seed,
            "script": "scripts/train_demo.py"}
    write_text_atomic(WEIGHTS / "demo.json", json.dumps(info, indent=2) + "\n")
    print(format_results(run_demo()))


if __name__ == "__main__":
    main()
