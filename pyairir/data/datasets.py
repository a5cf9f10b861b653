"""The benchmarks' datasets, read from the folder layouts the official releases use.

    data/Train/Denoise/*.png                         clean images; noise added on the fly
    data/Train/Derain/rainy/rain-N.png   gt/norain-N.png          (Rain100L training set)
    data/Train/Dehaze/synthetic/part*/ID_A_B.jpg   original/ID.jpg (RESIDE OTS)
    data/Train/Deblur/blur/X.png         sharp/X.png               (GoPro)
    data/Train/Enhance/low/X.png         gt/X.png                  (LOL)
    data/test/denoise/{bsd68,urban100,kodak24}/*.png               clean; noise added
    data/test/derain/Rain100L/{input,target}/X.png
    data/test/dehaze/input/ID_A_B.jpg    target/ID.png              (SOTS outdoor)
    data/test/deblur/gopro/{input,target}/X.png
    data/test/enhance/lol/{input,target}/X.png
    CDD-11_{train,test}/{low,haze,rain,snow,low_haze,...}/X.png   clear/X.png

Benchmarks: "3task" (PromptIR: denoise sigma 15/25/50, derain, dehaze), "5task" (AdaIR:
denoise sigma 25, derain, dehaze, deblur, enhance), "cdd11" (the 11 composite degradations).
Training samples are random crops with a random flip/rotation; every random choice comes from a
generator seeded by (seed, epoch, index), so a dataset is deterministic and can resume mid-epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pyairir.data.degradations import SYNTHETIC, components, degrade, gaussian_noise
from pyairir.data.io import ImageError, image_header, list_images, read_image

CDD11_DEGRADATIONS = ("low", "haze", "rain", "snow", "low_haze", "low_rain", "low_snow", "haze_rain", "haze_snow",
                      "low_haze_rain", "low_haze_snow")
BENCHMARKS = {
    "3task": ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"),
    "5task": ("denoise_25", "derain", "dehaze", "deblur", "enhance"),
    "cdd11": CDD11_DEGRADATIONS,
}
# How often each training image is repeated per epoch, as the official data loaders do.
REPEATS = {"denoise": 3, "derain": 120, "dehaze": 1, "deblur": 5, "enhance": 20}


@dataclass(frozen=True)
class Entry:
    """One sample: where its images are and how the degraded one is made."""

    task: str
    clean: Path
    degraded: Path | None = None  # None: synthesised from the clean image
    sigma: float = 0.0  # noise level for synthesised noisy samples
    synthetic: str | None = None  # or a synthetic degradation (pyairir.data.degradations.SYNTHETIC)


def _pairs(degraded_dir: Path, clean_dir: Path, clean_name: Callable[[Path], str], task: str,
           what: str) -> list[Entry]:
    entries = []
    for degraded in list_images(degraded_dir, what):
        clean = clean_dir / clean_name(degraded)
        if not clean.is_file():
            raise FileNotFoundError(f"{what}: {str(degraded)!r} has no ground truth; expected {str(clean)!r}")
        entries.append(Entry(task, clean, degraded))
    return entries


def _sigma(task: str) -> float:
    return float(task.split("_")[1])


def training_entries(root: str | os.PathLike, tasks: tuple[str, ...]) -> list[Entry]:
    """Samples of the official training layout under `root` (the `data/Train` folder, or CDD-11_train)."""
    root = Path(root)
    entries: list[Entry] = []
    for task in tasks:
        if task.startswith("denoise_"):
            clean = list_images(root / "Denoise", f"{task} training images")
            entries += [Entry(task, p, sigma=_sigma(task)) for p in clean] * REPEATS["denoise"]
        elif task == "derain":
            entries += _pairs(root / "Derain" / "rainy", root / "Derain" / "gt",
                              lambda p: "norain-" + p.name.split("rain-")[-1], task, "derain training set") * \
                REPEATS["derain"]
        elif task == "dehaze":
            synthetic = root / "Dehaze" / "synthetic"
            parts = sorted(p for p in synthetic.iterdir() if p.is_dir()) if synthetic.is_dir() else []
            if not parts:
                raise FileNotFoundError(f"dehaze training set: expected folders part1, part2, ... of hazy images "
                                        f"in {str(synthetic)!r}")
            for part in parts:
                entries += _pairs(part, root / "Dehaze" / "original",
                                  lambda p: p.name.split("_")[0] + p.suffix, task, "dehaze training set")
        elif task == "deblur":
            entries += _pairs(root / "Deblur" / "blur", root / "Deblur" / "sharp", lambda p: p.name, task,
                              "deblur training set") * REPEATS["deblur"]
        elif task == "enhance":
            entries += _pairs(root / "Enhance" / "low", root / "Enhance" / "gt", lambda p: p.name, task,
                              "enhance training set") * REPEATS["enhance"]
        elif task in CDD11_DEGRADATIONS:
            entries += _pairs(root / task, root / "clear", lambda p: p.name, task, f"CDD-11 {task}")
        else:
            raise ValueError(f"unknown task {task!r}; tasks: denoise_<sigma>, derain, dehaze, deblur, enhance, "
                             f"{', '.join(CDD11_DEGRADATIONS)}")
    return entries


def evaluation_entries(root: str | os.PathLike, task: str, denoise_set: str = "bsd68") -> list[Entry]:
    """Samples of the official test layout under `root` (the `data/test` folder, or CDD-11_test)."""
    root = Path(root)
    if task.startswith("denoise_"):
        return [Entry(task, p, sigma=_sigma(task)) for p in list_images(root / "denoise" / denoise_set, task)]
    if task == "derain":
        base = root / "derain" / "Rain100L"
        return _pairs(base / "input", base / "target", lambda p: p.name, task, "Rain100L test set")
    if task == "dehaze":
        return _pairs(root / "dehaze" / "input", root / "dehaze" / "target", lambda p: p.name.split("_")[0] + ".png",
                      task, "SOTS outdoor test set")
    if task in ("deblur", "enhance"):
        base = root / task / ("gopro" if task == "deblur" else "lol")
        return _pairs(base / "input", base / "target", lambda p: p.name, task, f"{task} test set")
    if task in CDD11_DEGRADATIONS:
        return _pairs(root / task, root / "clear", lambda p: p.name, task, f"CDD-11 {task}")
    raise ValueError(f"unknown task {task!r}")


def crop_to_multiple(x: torch.Tensor, base: int = 16) -> torch.Tensor:
    """Centre-crops (C, H, W) to multiples of `base`, as PromptIR's test loaders do."""
    h, w = x.shape[-2:]
    top, left = (h % base) // 2, (w % base) // 2
    return x[..., top: top + h - h % base, left: left + w - w % base]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of a (C, H, W) tensor (k = 0: unchanged)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


class RestorationDataset(Dataset):
    """(degraded, clean) pairs. patch_size: random crops of that size with a random dihedral
    transform (training); None: whole images centre-cropped to multiples of `multiple` (testing).
    Items are dicts: degraded, clean (3, h, w) float in [0, 1], task, name.

    cache_images: keep every image decoded in memory after its first read (12 bytes a pixel,
    in each loader worker). Decoding a photo costs far more than cutting a small patch from it:
    for a few photos and small patches this makes loading several times faster."""

    def __init__(self, entries: list[Entry], patch_size: int | None = 128, seed: int = 0, multiple: int = 16,
                 cache_images: bool = False) -> None:
        if not entries:
            raise ValueError("RestorationDataset: no samples")
        self.entries, self.patch_size, self.seed, self.multiple = entries, patch_size, seed, multiple
        self.epoch = 0
        self.cache: dict[Path, torch.Tensor] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.entries)

    def generator(self, index: int, epoch: int | None = None) -> torch.Generator:
        epoch = self.epoch if epoch is None else epoch
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 7_919 + index) % (2 ** 62))

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """item: an index, or (index, epoch) (what pyairir.train's sampler passes)."""
        index, epoch = item if isinstance(item, tuple) else (item, None)
        entry = self.entries[index]
        generator = self.generator(index, epoch)
        clean = self.read(entry.clean)
        degraded = self.read(entry.degraded) if entry.degraded is not None else None
        if degraded is not None and degraded.shape != clean.shape:
            raise ValueError(f"{entry.task}: {str(entry.degraded)!r} is {tuple(degraded.shape[1:])} but its ground "
                             f"truth {str(entry.clean)!r} is {tuple(clean.shape[1:])}")
        if self.patch_size is None:
            if min(clean.shape[-2:]) < self.multiple:
                raise ImageError(f"{str(entry.clean)!r} is {clean.shape[-1]}x{clean.shape[-2]}, smaller than "
                                 f"{self.multiple} pixels (the test crop multiple)")
            clean = crop_to_multiple(clean, self.multiple).clone()  # never a view of a cached image
            degraded = crop_to_multiple(degraded, self.multiple).clone() if degraded is not None else None
        else:
            clean, degraded = self._crop(clean, degraded, generator)
        if degraded is None:
            degraded = (gaussian_noise(clean, entry.sigma, generator) if entry.synthetic is None
                        else degrade(clean, entry.synthetic, generator))
        return {"degraded": degraded, "clean": clean, "task": entry.task, "name": entry.clean.stem}

    def read(self, path: Path) -> torch.Tensor:
        """read_image(path), from the cache when it is on (callers never modify the tensor)."""
        if self.cache is None:
            return read_image(path)
        if path not in self.cache:
            self.cache[path] = read_image(path)
        return self.cache[path]

    def _crop(self, clean: torch.Tensor, degraded: torch.Tensor | None, generator: torch.Generator):
        size = self.patch_size
        h, w = clean.shape[-2:]
        if h < size or w < size:  # too small for a patch: reflect-pad it up
            pad = (0, max(0, size - w), 0, max(0, size - h))
            clean = F.pad(clean[None], pad, mode="replicate")[0]
            degraded = F.pad(degraded[None], pad, mode="replicate")[0] if degraded is not None else None
            h, w = clean.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (), generator=generator))
        left = int(torch.randint(0, w - size + 1, (), generator=generator))
        k = int(torch.randint(0, 8, (), generator=generator))

        def patch(x):
            # a copy, also when the patch is the whole image: never a view of a cached image
            return dihedral(x[:, top: top + size, left: left + size], k).clone(memory_format=torch.contiguous_format)

        return patch(clean), patch(degraded) if degraded is not None else None


def check_images(*datasets: RestorationDataset, show: int = 10) -> None:
    """Raises ImageError listing every image of `datasets` that would fail or be padded when read
    (unreadable, a mode read_image refuses, a degraded image whose size differs from its ground
    truth's, a side shorter than the training patch or, for whole-image testing, than `multiple`),
    judged from the headers only: a bad file is found before the first step or the first
    restoration rather than hours into a run."""
    headers: dict[Path, tuple[str | None, tuple[int, int]]] = {}
    problems = []
    for dataset in datasets:
        least = dataset.patch_size or dataset.multiple
        what = (f"the {least}x{least} training patch" if dataset.patch_size
                else f"{least} pixels (the test crop multiple)")
        for entry in dataset.entries:
            for path in (entry.clean, entry.degraded):
                if path is not None and path not in headers:
                    headers[path] = problem, (h, w) = image_header(path)
                    if problem is None and min(h, w) < least:
                        problem = f"{str(path)!r} is {w}x{h}, smaller than {what}"
                    if problem:
                        problems.append(problem)
            if entry.degraded is not None:
                (bad, clean_size), (bad_too, degraded_size) = headers[entry.clean], headers[entry.degraded]
                if not bad and not bad_too and clean_size != degraded_size:
                    problems.append(f"{str(entry.degraded)!r} is {degraded_size[1]}x{degraded_size[0]} but its "
                                    f"ground truth {str(entry.clean)!r} is {clean_size[1]}x{clean_size[0]}")
    if problems:
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise ImageError(f"{len(problems)} problem(s) with the {len(headers)} images:\n  "
                         + "\n  ".join(problems[:show]) + more)


def training_set(root: str | os.PathLike, benchmark: str = "3task", patch_size: int = 128,
                 seed: int = 0, cache_images: bool = False) -> RestorationDataset:
    """The training set of a benchmark: `root` is data/Train (or CDD-11_train for cdd11)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; available: {', '.join(BENCHMARKS)}")
    return RestorationDataset(training_entries(root, BENCHMARKS[benchmark]), patch_size, seed,
                              cache_images=cache_images)


def evaluation_sets(root: str | os.PathLike, benchmark: str = "3task", seed: int = 0) -> dict[str, RestorationDataset]:
    """Per task, the test set of a benchmark: `root` is data/test (or CDD-11_test for cdd11)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; available: {', '.join(BENCHMARKS)}")
    return {task: RestorationDataset(evaluation_entries(root, task), None, seed) for task in BENCHMARKS[benchmark]}


def synthetic_set(clean: str | os.PathLike | list[Path], kinds: tuple[str, ...] = tuple(SYNTHETIC),
                  patch_size: int | None = 128, seed: int = 0, repeat: int = 1,
                  cache_images: bool = False) -> RestorationDataset:
    """Every clean image (a folder, or a list of files) under every synthetic degradation in
    `kinds` (noise, rain, haze, low_light, blur, noise_<sigma> or composites: pyairir.data.degrade),
    `repeat` times; the task is the degradation."""
    files = list_images(clean, "synthetic training set") if not isinstance(clean, list) else clean
    for kind in kinds:
        components(kind)  # a clear error for an unknown one
    entries = [Entry(kind, path, synthetic=kind) for path in files for kind in kinds] * repeat
    return RestorationDataset(entries, patch_size, seed, cache_images=cache_images)
