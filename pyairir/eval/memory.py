"""The memory a restoration needs, known before it runs: a model run on the meta device (shapes
only: no memory, no arithmetic) under a dispatch mode that adds up the bytes of the tensors
alive at each moment; and, for an image too large for the memory available, the largest tile
that fits."""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# The estimate counts the tensors the model's Python code and its ops return; the allocator's
# slack and the kernels' own scratch buffers come on top. `python -m benchmarks.memory_estimate`
# measured the real peak at 0.77-1.39 x the estimate (PromptIR, Restormer 384², NAFNet demo 512²).
SAFETY = 1.5
# Below this many pixels no estimate is made: any machine restores them untiled.
SMALL = 1024 * 1024


class _LiveBytes(TorchDispatchMode):
    """Adds up the storage of every new tensor an op returns, until its Python object is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                size = t.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, size)
        return out


def peak_activation_bytes(model: nn.Module, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    """The most bytes of tensors alive at once while `model` restores one (1, 3, height, width)
    image without gradients (weights not counted: they are resident already)."""
    state = {name: torch.empty_like(t, device="meta") for name, t in model.state_dict(keep_vars=True).items()}
    image = torch.empty((1, 3, height, width), dtype=dtype, device="meta")
    tracker = _LiveBytes()
    with torch.no_grad(), tracker:
        functional_call(model, state, (image,), strict=False)
    return tracker.peak


def available_bytes() -> int | None:
    """The memory the system can give without swapping (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def plan_tile(model: nn.Module, height: int, width: int, multiple: int, overlap: int,
              available: int | None = None) -> tuple[int | None, int]:
    """(tile, needed): `needed` the bytes an untiled restoration is estimated to take (SAFETY x
    the meta-device peak); `tile` None if that fits in `available` (default: available_bytes()),
    else the largest multiple of `multiple` whose tiles (with `overlap`) need at most half of it
    (at least the smallest multiple larger than the overlap)."""
    if height * width < SMALL:
        return None, 0
    available = available_bytes() if available is None else available
    needed = int(SAFETY * peak_activation_bytes(model, height, width))
    if available is None or needed <= available:
        return None, needed
    per_pixel = needed / (height * width)
    side = int((available / 2 / per_pixel) ** 0.5) - 2 * overlap
    smallest = (overlap // multiple + 1) * multiple  # a multiple of `multiple` beyond the overlap
    return max(side // multiple * multiple, smallest), needed
