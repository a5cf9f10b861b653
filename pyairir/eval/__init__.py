"""Evaluation: inference on any image size, tiled inference, the papers' metrics, per-task tables."""

from pyairir.eval.evaluate import evaluate, format_table
from pyairir.eval.inference import restore
from pyairir.eval.metrics import psnr, ssim
from pyairir.eval.tiled import tiled_restore

__all__ = ["evaluate", "format_table", "psnr", "restore", "ssim", "tiled_restore"]
