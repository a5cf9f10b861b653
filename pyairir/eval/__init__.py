"""Evaluation: inference on any image size, tiled inference, SIPL's self-refinement, the papers'
metrics, per-task tables."""

from pyairir.eval.evaluate import evaluate, format_table
from pyairir.eval.inference import restore
from pyairir.eval.metrics import psnr, ssim
from pyairir.eval.refine import self_refine
from pyairir.eval.tiled import tiled_restore

__all__ = ["evaluate", "format_table", "psnr", "restore", "self_refine", "ssim", "tiled_restore"]
