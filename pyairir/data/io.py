"""Reading and writing images as (3, H, W) float32 tensors in [0, 1], with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pyairir._files import atomic_path, is_temporary

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file that is missing, unreadable, or not an RGB image."""


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """The RGB image at `path` as a (3, H, W) float32 tensor in [0, 1], upright.

    The EXIF orientation is applied (a phone photo stored sideways comes out as it is shown).
    Grayscale and palette images are converted to RGB (no information is lost); 16-bit images keep
    their precision (integer images with values above 65535 are refused); an image with
    transparency (RGBA, LA) is refused, as what lies under the alpha is not an image to restore.
    Images larger than Pillow's decompression-bomb limit (about 179 megapixels) are refused.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist or is not a file")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            mode = image.mode
            problem = _mode_problem(mode, image.info)
            if problem:
                raise ImageError(f"image {str(path)!r} {problem}")
            array = np.asarray(image.convert("RGB") if mode not in ("I;16", "I") else image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"image {str(path)!r} is too large to read safely: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image {str(path)!r} could not be read (corrupt or not an image): {error}") from None
    if mode in ("I;16", "I"):
        if array.ndim != 2 or array.min() < 0 or array.max() > 65535:
            raise ImageError(f"image {str(path)!r} is a {mode} integer image with values outside 0..65535 "
                             f"(range {array.min()}..{array.max()}); expected 8- or 16-bit data")
        array = np.repeat((array.astype(np.float32) / 65535.0)[..., None], 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return to_tensor(array)


def _mode_problem(mode: str, info: dict) -> str | None:
    """Why an image of this Pillow mode cannot be restored, or None if it can."""
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in info):
        return (f"has an alpha channel (mode {mode}, 4 channels with RGBA); pyairir restores 3-channel RGB "
                "images: flatten or drop the alpha first")
    if mode not in ("RGB", "L", "P", "I;16", "I", "CMYK", "YCbCr"):
        return f"has mode {mode}; expected an RGB or grayscale image"
    return None


def image_header(path: str | os.PathLike) -> tuple[str | None, tuple[int, int]]:
    """(what is wrong with the image file at `path` for read_image, or None; its upright (height,
    width) after the EXIF orientation), judged from its header only: missing, not an image, too
    large, or a mode read_image refuses."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        return f"{str(path)!r} does not exist or is not a file", (0, 0)
    try:
        with Image.open(path) as image:
            mode, info, (width, height) = image.mode, image.info, image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn by 90 degrees
                width, height = height, width
    except Image.DecompressionBombError as error:
        return f"{str(path)!r} is too large to read safely: {error}", (0, 0)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"{str(path)!r} could not be read (corrupt or not an image): {error}", (0, 0)
    problem = _mode_problem(mode, info)
    return (f"{str(path)!r} {problem}" if problem else None), (height, width)


def icc_profile(path: str | os.PathLike) -> bytes | None:
    """The ICC colour profile embedded in the image at `path`, if any (to carry it to the output)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.info.get("icc_profile") or None


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (H, W) uint8 -> (3, H, W) float32 in [0, 1]."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) RGB array, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded (values outside [0, 1] clipped)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ImageError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_image(path: str | os.PathLike, image: torch.Tensor, icc_profile: bytes | None = None) -> None:
    """Writes (3, H, W) in [0, 1] to `path` (format from the suffix), atomically: a temporary file
    in the same folder is renamed over the destination only once complete. icc_profile: a colour
    profile to embed (the input's, see icc_profile)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageError(f"cannot write {str(path)!r}: the suffix must be one of {', '.join(IMAGE_EXTENSIONS)}")
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    if icc_profile and path.suffix.lower() != ".bmp":
        options["icc_profile"] = icc_profile
    with atomic_path(path) as temporary:
        Image.fromarray(to_uint8(image)).save(temporary, **options)


def list_images(folder: str | os.PathLike, what: str) -> list[Path]:
    """The image files in `folder`, sorted; `what` names the folder's role in errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: expected a folder of images at {str(folder)!r}, which does not exist")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not is_temporary(p))
    if not files:
        raise FileNotFoundError(f"{what}: the folder {str(folder)!r} holds no image files "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    return files
