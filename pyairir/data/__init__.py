"""Data: image I/O, synthetic degradations, and the benchmarks' datasets."""

from pyairir.data.datasets import (BENCHMARKS, RestorationDataset, check_images, crop_to_multiple,
                                   evaluation_sets, synthetic_set, training_set)
from pyairir.data.degradations import degrade, gaussian_noise
from pyairir.data.io import ImageError, read_image, write_image

__all__ = ["BENCHMARKS", "ImageError", "RestorationDataset", "check_images", "crop_to_multiple", "degrade",
           "gaussian_noise", "read_image", "evaluation_sets", "synthetic_set", "training_set", "write_image"]
