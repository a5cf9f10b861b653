"""Ships the learning run's SIPL-PromptIR-small as pyairir's second demo model, if it restores the
held-out photos better than the NAFNet demo on at least one task.

    python -m benchmarks.learning          # first: the full learning run (runs/learning)
    python scripts/sipl_demo.py [--run runs/learning] [--seed 0]

Takes the run's SIPL model of `--seed` (seed 0 by default, chosen before any result was seen),
rounds its weights to float16 (as they are shipped), scores it and the NAFNet demo on the learning
run's held-out samples (benchmarks.learning.held_out: the two held-out photos under each of its
tasks), prints the per-task PSNR of both, and writes pyairir/weights/demo_sipl.{safetensors,json}
only if SIPL is ahead on some task. Then `pyairir demo --paradigm sipl` and `pyairir restore
--paradigm sipl` run it offline.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.learning
from benchmarks import learning  # noqa: E402
from pyairir._files import atomic_path, write_text_atomic  # noqa: E402
from pyairir.demo import DEMOS, WEIGHTS, load_demo_model  # noqa: E402
from pyairir.eval import restore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(learning.ROOT / "runs" / "learning"), help="the learning run's folder")
    parser.add_argument("--seed", type=int, default=0, help="which seed's SIPL model (default 0)")
    args = parser.parse_args(argv)
    out, settings = Path(args.run), learning.FULL
    meta = out / "settings.json"
    if not meta.is_file() or json.loads(meta.read_text()) != json.loads(json.dumps(asdict(settings))):
        print(f"sipl_demo: {out} holds no full learning run with the current settings; run "
              "`python -m benchmarks.learning` first", file=sys.stderr)
        return 1
    c = learning.config("promptir", "sipl", args.seed, settings, out, quick=True)
    if not (Path(c.out) / f"checkpoint-{c.steps}").is_dir():
        print(f"sipl_demo: {c.out} has not finished training ({c.steps} steps)", file=sys.stderr)
        return 1
    sipl = learning.trained(c)
    weights = {k: v.to(torch.float16).contiguous() for k, v in sipl.state_dict().items()}
    sipl.load_state_dict({k: v.float() for k, v in weights.items()})  # scored as shipped
    nafnet = load_demo_model()
    samples = learning.held_out(settings)
    with torch.no_grad():
        scores = {name: learning.scores([restore(model, s["degraded"]) for s in samples], samples)
                  for name, model in (("sipl", sipl), ("nafnet", nafnet))}
    degraded = learning.scores([s["degraded"] for s in samples], samples)
    print(f"{'task':<20} {'degraded':>9} {'NAFNet demo':>12} {'SIPL-PromptIR-small':>20}")
    for task in (*learning.TASKS, "average"):
        print(f"{task:<20} {degraded[task]['psnr']:>7.2f}dB {scores['nafnet'][task]['psnr']:>10.2f}dB "
              f"{scores['sipl'][task]['psnr']:>18.2f}dB")
    ahead = [t for t in learning.TASKS if scores["sipl"][t]["psnr"] > scores["nafnet"][t]["psnr"]]
    if not ahead:
        print("sipl_demo: SIPL-PromptIR-small is behind the NAFNet demo on every task: not shipped")
        return 1
    WEIGHTS.mkdir(exist_ok=True)
    with atomic_path(WEIGHTS / "demo_sipl.safetensors") as temporary:
        save_file(weights, temporary)
    info = {"model": c.model, "model_args": c.model_args, "paradigm": c.paradigm, "paradigm_args": c.paradigm_args,
            "weights": "demo_sipl.safetensors", "trained_on": list(learning.TRAINING_PHOTOS),
            "degradations": list(learning.TASKS), "steps": c.steps, "batch_size": c.batch_size,
            "patch_size": c.patch_size, "lr": c.lr, "seed": c.seed,
            "script": "python -m benchmarks.learning; python scripts/sipl_demo.py",
            "psnr_held_out": {t: {"sipl": round(scores["sipl"][t]["psnr"], 2),
                                  "nafnet_demo": round(scores["nafnet"][t]["psnr"], 2)}
                              for t in (*learning.TASKS, "average")}}
    write_text_atomic(WEIGHTS / DEMOS["sipl"], json.dumps(info, indent=2) + "\n")
    print(f"sipl_demo: ahead of the NAFNet demo on {', '.join(ahead)}: wrote {WEIGHTS / DEMOS['sipl']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
