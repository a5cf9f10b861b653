"""Figures, written to image files with matplotlib (which `pip install .[plots]` installs)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyairir._files import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pyairir's plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    _pyplot().close(figure)
    return path


def psnr_per_task(results: dict[str, dict[str, float]], path: str | os.PathLike, title: str = "PSNR per task") -> Path:
    """Bar chart of the PSNR of each task in `evaluate()` results."""
    plt = _pyplot()
    tasks = list(results)
    figure, axis = plt.subplots(figsize=(max(4, 1.1 * len(tasks)), 3.2))
    axis.bar(tasks, [results[t]["psnr"] for t in tasks], color="#4477aa")
    axis.set_ylabel("PSNR (dB)")
    axis.set_title(title)
    axis.tick_params(axis="x", rotation=30)
    return _save(figure, path)


def psnr_per_iteration(psnrs: list[float], path: str | os.PathLike, title: str = "SIPL self-refinement") -> Path:
    """PSNR of I^(0), I^(1), ... (SIPL's iterates)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.plot(range(len(psnrs)), psnrs, marker="o", color="#aa3377")
    axis.set_xlabel("iteration t")
    axis.set_ylabel("PSNR (dB)")
    axis.set_title(title)
    axis.set_xticks(range(len(psnrs)))
    return _save(figure, path)


def prompt_selection(probabilities: dict[str, torch.Tensor], entropies: dict[str, float],
                     path: str | os.PathLike, title: str = "Prompt selection per task") -> Path:
    """CPL Fig. 4: per task, the mean selection probability of each prompt, with its entropy."""
    plt = _pyplot()
    tasks = list(probabilities)
    figure, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks), 2.6), sharey=True, squeeze=False)
    for axis, task in zip(axes[0], tasks):
        p = probabilities[task]
        axis.bar(range(len(p)), p.tolist(), color="#228833")
        axis.set_title(f"{task}\n{entropies[task]:.2f} bits", fontsize=9)
        axis.set_xticks(range(len(p)))
    axes[0][0].set_ylabel("selection probability")
    figure.suptitle(title)
    return _save(figure, path)


def benchmark_ratios(ratios: list[dict], path: str | os.PathLike) -> Path:
    """Horizontal bars of the speed ratios benchmarks/ wrote (.benchmarks/ratios.json), targets marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(ratios) + 1))
    names = [r["claim"] for r in ratios]
    axis.barh(names, [r["ratio"] for r in ratios], color="#66ccee")
    for i, r in enumerate(ratios):
        if r["target"] is not None:
            axis.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="#ee6677")
    axis.set_xlabel("speed-up (x)")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=7)
    return _save(figure, path)
