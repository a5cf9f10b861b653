"""Evaluation: inference on any image size (metrics and tiled inference come next)."""

from pyairir.eval.inference import restore

__all__ = ["restore"]
