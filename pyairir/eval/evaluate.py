"""Evaluating a model on test sets: PSNR/SSIM per task, as the papers tabulate them."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pyairir.data.datasets import RestorationDataset, check_images
from pyairir.data.io import ImageError
from pyairir.eval.inference import restore
from pyairir.eval.metrics import psnr, ssim
from pyairir.eval.refine import self_refine
from pyairir.eval.tiled import tiled_restore
from pyairir.models.checks import size_multiple


def restorer(model: nn.Module, tile: int | None = None, overlap: int = 32, iterations: int | None = None,
             progress: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """image (B, 3, H, W) -> restored, with tiling and (for SIPL) self-refinement iterations;
    progress: a progress bar over each pass's tiles."""
    if iterations is not None and not hasattr(model, "fused_dictionaries"):
        raise ValueError(f"iterations: only SIPL models refine iteratively; {type(model).__name__} does not")
    if tile is not None:
        smallest = max(size_multiple(model), overlap + 1)
        if tile < smallest or overlap < 0:
            raise ValueError(f"tile must be at least {smallest} (the model's size multiple {size_multiple(model)}, "
                             f"and more than the overlap {overlap}), got tile {tile} with overlap {overlap}")
    if iterations:
        return lambda x: self_refine(model, x, iterations, tile, overlap, progress=progress)[-1]
    return lambda x: tiled_restore(model, x, tile, overlap, progress=progress) if tile else restore(model, x)


def evaluate(model: nn.Module, datasets: dict[str, Dataset], protocol: str = "promptir", y_channel: bool = False,
             crop_border: int = 0, tile: int | None = None, iterations: int | None = None,
             progress: bool = True, statistics=None, overlap: int = 32) -> dict[str, dict]:
    """{task: {"psnr", "ssim", "count"}} plus "average" (the mean over tasks, as the papers report).

    With `iterations` (SIPL), the metrics are those of the last iterate and "psnr_per_iteration"
    lists the PSNR of I^(0) ... I^(iterations). `statistics` (a PromptSelectionStatistics) records
    the prompts a CPL model selects for each task. With `tile`, every image is restored in tiles of
    that size overlapping by `overlap` pixels (pyairir.eval.tiled_restore). Every image is checked
    (pyairir.data.check_images) before the first is restored; an image that still fails to load is
    listed under the task's "failed" and left out of its means.
    """
    run = restorer(model, tile, overlap, iterations=None if iterations is None else 0)
    check_images(*(d for d in datasets.values() if isinstance(d, RestorationDataset)))  # before any restoration
    model.eval()
    results: dict[str, dict] = {}
    for task, dataset in datasets.items():
        total_psnr = total_ssim = 0.0
        per_iteration = [0.0] * ((iterations or 0) + 1)
        failed = []
        for index in tqdm(range(len(dataset)), desc=f"eval {task}", disable=not progress, leave=False):
            try:
                sample = dataset[index]
            except (ImageError, ValueError) as error:  # a file that changed since the check: keep going
                failed.append(str(error))
                continue
            clean = sample["clean"][None]
            with torch.no_grad():
                restored = run(sample["degraded"][None]) if iterations is None else None
                if statistics is not None:
                    statistics.record(model, [task])
                if iterations is not None:
                    iterates = self_refine(model, sample["degraded"][None], iterations, tile, overlap)
                    for t, image in enumerate(iterates):
                        per_iteration[t] += psnr(image, clean, protocol, y_channel, crop_border).item()
                    restored = iterates[-1]
            total_psnr += psnr(restored, clean, protocol, y_channel, crop_border).item()
            total_ssim += ssim(restored, clean, protocol, y_channel, crop_border).item()
        count = len(dataset) - len(failed)
        if count == 0:
            raise ImageError(f"eval {task}: none of the {len(dataset)} images could be read: {failed[0]}")
        results[task] = {"psnr": total_psnr / count, "ssim": total_ssim / count, "count": count}
        if iterations is not None:
            results[task]["psnr_per_iteration"] = [total / count for total in per_iteration]
        if failed:
            results[task]["failed"] = failed
    if results:
        tasks = list(results.values())
        results["average"] = {key: sum(r[key] for r in tasks) / len(tasks) for key in ("psnr", "ssim")}
        results["average"]["count"] = sum(r["count"] for r in tasks)
        if iterations is not None:
            results["average"]["psnr_per_iteration"] = [sum(r["psnr_per_iteration"][t] for r in tasks) / len(tasks)
                                                         for t in range(iterations + 1)]
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: task | PSNR | SSIM | images."""
    lines = ["| task | PSNR (dB) | SSIM | images |", "|---|---:|---:|---:|"]
    for task, r in results.items():
        lines.append(f"| {task} | {r['psnr']:.2f} | {r['ssim']:.4f} | {int(r['count'])} |")
    return "\n".join(lines)
