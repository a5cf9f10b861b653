"""The demo models shipped with pyairir, trained on CPU on scikit-image's sample photos and shown
on photos they never saw:

- "none": a small NAFNet (scripts/train_demo.py), five synthetic degradations;
- "sipl": SIPL around a small PromptIR, the seed-0 model of the learning run
  (`python -m benchmarks.learning`, then scripts/sipl_demo.py), noise at three levels, rain,
  haze, low light and three composites.

    pyairir demo [--paradigm sipl]   # restores held-out photos, prints the PSNR gained, writes a comparison
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
from torch import nn

from pyairir.data.degradations import SYNTHETIC, degrade
from pyairir.data.io import to_tensor, write_image
from pyairir.eval.inference import restore
from pyairir.eval.metrics import psnr
from pyairir.models.checkpoint import load_checkpoint
from pyairir.models.registry import create_model

WEIGHTS = Path(__file__).parent / "weights"
# scikit-image sample photos (bundled in its wheel, no download): trained on, and held out.
TRAINING_PHOTOS = ("astronaut", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry", "retina",
                   "camera", "moon", "coins", "brick", "grass", "gravel", "clock", "page")
HELD_OUT_PHOTOS = ("chelsea", "coffee")
DEMOS = {"none": "demo.json", "sipl": "demo_sipl.json"}  # paradigm -> description in WEIGHTS


def sample_photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo as (3, H, W) in [0, 1] (grayscale ones replicated to RGB)."""
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the demo photos come from scikit-image: pip install scikit-image") from None
    if name == "motorcycle_left":
        array = data.stereo_motorcycle()[0]
    else:
        array = getattr(data, name)()
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    return to_tensor(array)


def demo_info(paradigm: str = "none") -> dict:
    """The description of the demo model for `paradigm` (pyairir/weights/*.json): model, model_args,
    paradigm, paradigm_args, weights, degradations it was trained on, how it was made."""
    if paradigm not in DEMOS:
        raise ValueError(f"no demo model for paradigm {paradigm!r}: pyairir ships demo models for "
                         f"{', '.join(DEMOS)}")
    path = WEIGHTS / DEMOS[paradigm]
    if not path.is_file():
        made_by = "scripts/train_demo.py" if paradigm == "none" else "scripts/sipl_demo.py"
        raise FileNotFoundError(f"pyairir's demo weights are missing ({path}); they are made by "
                                f"`python {made_by}` in the repository")
    return json.loads(_read(path))


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> str:
    """A shipped description file's text, read once per process."""
    return path.read_text()


def demo_name(paradigm: str = "none") -> str:
    """How the demo model for `paradigm` is named to users: its model, and its paradigm if any
    ("nafnet_demo", "SIPL around promptir")."""
    info = demo_info(paradigm)
    return info["model"] if info.get("paradigm", "none") == "none" else f"{info['paradigm'].upper()} around {info['model']}"


def load_demo_model(fast: bool = True, paradigm: str = "none") -> nn.Module:
    """The shipped demo model for `paradigm` ("none": NAFNet; "sipl": SIPL-PromptIR-small), ready for
    inference (no download: the weights are in the package)."""
    info = demo_info(paradigm)
    if info.get("paradigm", "none") == "none":
        model = create_model(info["model"], fast=fast, **info.get("model_args", {}))
    else:
        from pyairir.train.config import TrainConfig
        from pyairir.train.trainer import build_model

        model = build_model(TrainConfig(model=info["model"], model_args=info.get("model_args", {}), fast=fast,
                                        paradigm=info["paradigm"], paradigm_args=info.get("paradigm_args", {})))
    load_checkpoint(model, WEIGHTS / info["weights"])
    return model.eval()


def side_by_side(rows: list[list[torch.Tensor]], gap: int = 4) -> torch.Tensor:
    """A (3, H, W) grid of equally sized images, `gap` white pixels apart."""
    h, w = rows[0][0].shape[-2:]
    grid = torch.ones(3, len(rows) * (h + gap) - gap, len(rows[0]) * (w + gap) - gap)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[:, r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = image.clamp(0, 1)
    return grid


def run_demo(model: nn.Module | None = None, photos: tuple[str, ...] = HELD_OUT_PHOTOS,
             out: str | os.PathLike | None = None, seed: int = 0,
             kinds: tuple[str, ...] = tuple(SYNTHETIC)) -> dict[str, dict[str, float]]:
    """Degrades each held-out photo with each degradation of `kinds` (seeded; pyairir.data.degrade),
    restores it, and returns {degradation: {"before": PSNR, "after": PSNR}} averaged over the
    photos. With `out`, writes demo_<photo>.png: rows of (degraded | restored | clean)."""
    model = model or load_demo_model()
    results = {kind: {"before": 0.0, "after": 0.0} for kind in kinds}
    for p, name in enumerate(photos):
        clean = sample_photo(name)
        rows = []
        for k, kind in enumerate(kinds):
            degraded = degrade(clean, kind, torch.Generator().manual_seed(seed * 1000 + p * 10 + k))
            restored = restore(model, degraded).clamp(0, 1)
            results[kind]["before"] += psnr(degraded, clean).item() / len(photos)
            results[kind]["after"] += psnr(restored, clean).item() / len(photos)
            rows.append([degraded, restored, clean])
        if out is not None:
            write_image(Path(out) / f"demo_{name}.png", side_by_side(rows))
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    width = max(12, *(len(kind) for kind in results))
    lines = [f"{'degradation':<{width}} {'degraded':>9} {'restored':>9} {'gain':>7}"]
    for kind, r in results.items():
        lines.append(f"{kind:<{width}} {r['before']:>7.2f}dB {r['after']:>7.2f}dB {r['after'] - r['before']:>+6.2f}dB")
    before = sum(r["before"] for r in results.values()) / len(results)
    after = sum(r["after"] for r in results.values()) / len(results)
    lines.append(f"{'average':<{width}} {before:>7.2f}dB {after:>7.2f}dB {after - before:>+6.2f}dB")
    return "\n".join(lines)
