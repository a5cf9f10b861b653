"""The restorations `pyairir serve` runs: one queue, one worker, results in a folder it owns.

Requests are queued and restored one after another (a 2-core machine gains nothing from running
two models at once, and two would double the memory); the web handlers only enqueue and read
state. Everything a job writes goes into the service's temporary folder, and the oldest finished
jobs are forgotten (their files deleted) once more than `keep` are held, so memory and disk stay
flat however long the server runs.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pyairir.data.degradations import SYNTHETIC, degrade
from pyairir.data.io import ImageError, image_header, read_image, write_image
from pyairir.eval.evaluate import restorer
from pyairir.eval.memory import plan_tile
from pyairir.eval.metrics import psnr, ssim
from pyairir.eval.refine import self_refine
from pyairir.eval.tiled import tile_count
from pyairir.models.checks import size_multiple
from pyairir.nn import SparsePromptModule

DEGRADATIONS = ("none", *SYNTHETIC)


@dataclass
class Job:
    """One restoration request and what became of it (the state the page polls)."""

    id: str
    number: int
    degradation: str
    seed: int
    state: str = "queued"  # queued -> running -> done | error
    stage: str = ""
    done: int = 0
    total: int = 0
    error: str | None = None
    result: dict = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class _PassCounter:
    """Counts the model's passes (tiles, and SIPL's refinement passes) into a job's progress: its
    forward calls, or for SIPL the calls of its shallowest fusion block (`cross_p1`), which every
    decoder pass runs once, also the refinement passes that do not go through forward."""

    def __init__(self, model: nn.Module) -> None:
        self.job: Job | None = None
        self.hook = getattr(model, "cross_p1", model).register_forward_hook(self._count)

    def _count(self, *_) -> None:
        if self.job is not None:
            self.job.done += 1


class _PromptRecorder:
    """The prompts each Sparse Prompt Module (CPL) selected, summed over the passes of a job."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, SparsePromptModule)]
        self.counts: list[torch.Tensor] = []
        self.hooks = [module.register_forward_hook(lambda m, *_, index=index: self._record(index, m))
                      for index, module in enumerate(self.modules)]

    def reset(self) -> None:
        self.counts = [torch.zeros(m.prompt_len, dtype=torch.long) for m in self.modules]

    def _record(self, index: int, module: SparsePromptModule) -> None:
        self.counts[index] += torch.bincount(module.last_selection.cpu().flatten(), minlength=module.prompt_len)

    def summary(self) -> list[dict]:
        """Per prompt level: how often each prompt was selected, and the most selected one."""
        return [{"level": i + 1, "counts": c.tolist(), "chosen": int(c.argmax())} for i, c in enumerate(self.counts)]


class RestorationService:
    """Restores uploaded images with `model`, one request at a time, in a background thread.

    model: any pyairir model (a backbone, or one wrapped in a paradigm), in eval mode.
    description: how the page names the model. max_pixels: larger images are refused. tile:
    restore in tiles of this size (None: whole images, and tiles only for an image whose
    untiled restoration would not fit in memory, as `pyairir restore` does). iterations: SIPL
    self-refinement iterations (default 1; every iterate is returned). keep: finished jobs held before the
    oldest are forgotten.
    """

    def __init__(self, model: nn.Module, description: str, max_pixels: int = 12_000_000, tile: int | None = None,
                 overlap: int = 32, iterations: int | None = None, keep: int = 32) -> None:
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.model, self.description = model.eval(), description
        self.max_pixels, self.tile, self.overlap, self.keep = max_pixels, tile, overlap, keep
        if iterations is not None and iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        restorer(model, tile, overlap, iterations)  # checks the tile and overlap, and that the model is SIPL
        self.sipl = hasattr(model, "fused_dictionaries")
        self.iterations = (1 if iterations is None else iterations) if self.sipl else None
        self.folder = Path(tempfile.mkdtemp(prefix="pyairir-serve-"))
        self.jobs: dict[str, Job] = {}
        self._numbers = itertools.count()
        self._queue: queue.Queue[tuple[Job, bytes, bytes | None] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._passes = _PassCounter(model)
        self._prompts = _PromptRecorder(model)
        self._worker = threading.Thread(target=self._work, name="pyairir-serve-worker", daemon=True)
        self._worker.start()

    # --- what the web handlers call -------------------------------------------------------------

    def submit(self, image: bytes, clean: bytes | None = None, degradation: str = "none", seed: int = 0) -> Job:
        """Queues a restoration of the encoded image `image` (PNG, JPEG, ...), optionally degraded
        first by a synthetic `degradation`; `clean`: the clean image to score the result against
        (by default the upload itself when it is degraded here)."""
        if degradation not in DEGRADATIONS:
            raise ValueError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {degradation!r}")
        if not image:
            raise ValueError("image: the upload is empty")
        job = Job(id=secrets.token_hex(8), number=next(self._numbers), degradation=degradation, seed=seed)
        with self._lock:
            self.jobs[job.id] = job
        self._queue.put((job, image, clean or None))
        return job

    def status(self, job_id: str) -> dict:
        """What the page shows for a job; KeyError if there is no such job (or it was forgotten)."""
        job = self.jobs[job_id]
        ahead = sum(1 for j in list(self.jobs.values()) if j.state == "queued" and j.number < job.number)
        running = job.state == "queued" and any(j.state == "running" for j in list(self.jobs.values()))
        return {"id": job.id, "state": job.state, "stage": job.stage, "done": job.done, "total": job.total,
                "ahead": ahead + running, "error": job.error, "result": job.result if job.state == "done" else None}

    def file(self, job_id: str, name: str) -> Path:
        """The path of a job's image `name`; KeyError if there is none."""
        return self.jobs[job_id].files[name]

    def close(self) -> None:
        """Stops the worker after the current job, takes its hooks off the model and deletes the
        service's folder."""
        self._queue.put(None)
        self._worker.join(timeout=60)
        for hook in (self._passes.hook, *self._prompts.hooks):
            hook.remove()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, image, clean = item
            job.state = "running"
            try:
                job.result = self._restore(job, image, clean)
                job.stage, outcome = "", "done"
            except (ImageError, ValueError) as error:
                job.error, outcome = str(error), "error"
            except (RuntimeError, MemoryError) as error:  # the model failed: say so, keep serving
                job.error, outcome = f"the restoration failed: {error}", "error"
            finally:
                self._passes.job = None
            self._finish(job, outcome)

    def _read(self, job: Job, data: bytes, name: str) -> torch.Tensor:
        """The uploaded bytes as a (3, H, W) image, checked from the header before decoding."""
        path = self.folder / job.id / f"upload-{name}"
        path.write_bytes(data)
        try:
            problem, (height, width) = image_header(path)
            if problem:
                raise ImageError(problem)
            if height * width > self.max_pixels:
                raise ImageError(f"the {name} image has {width}x{height} = {height * width:,} pixels, more than "
                                 f"this server's limit of {self.max_pixels:,} (pyairir serve --max-pixels)")
            return read_image(path)
        except ImageError as error:  # the page names the image, not the server's file
            raise ImageError(str(error).replace(repr(str(path)), f"the {name} image")) from None
        finally:
            path.unlink()

    def _restore(self, job: Job, data: bytes, clean_data: bytes | None) -> dict:
        (self.folder / job.id).mkdir()
        job.stage = "reading"
        upload = self._read(job, data, "uploaded")
        clean = self._read(job, clean_data, "clean") if clean_data is not None else None
        if clean is not None and clean.shape != upload.shape:
            raise ImageError(f"the clean image is {clean.shape[2]}x{clean.shape[1]}, the uploaded one "
                             f"{upload.shape[2]}x{upload.shape[1]}: they must be the same size")
        degraded = upload
        if job.degradation != "none":
            degraded = degrade(upload, job.degradation, torch.Generator().manual_seed(job.seed))
            degraded = degraded.clamp(0, 1).mul(255).round().div(255)  # what the page shows is what was restored
            clean = upload if clean is None else clean
        height, width = degraded.shape[-2:]
        tile = self.tile
        if tile is None:
            tile, _ = plan_tile(self.model, height, width, size_multiple(self.model), self.overlap)
        passes = (self.iterations or 0) + 1
        job.stage, job.done = "restoring", 0
        job.total = passes * (tile_count(height, width, tile, self.overlap) if tile else 1)
        self._passes.job = job
        self._prompts.reset()
        start = time.perf_counter()
        with torch.no_grad():
            if self.sipl:
                outputs = self_refine(self.model, degraded[None], self.iterations, tile, self.overlap)
            else:
                outputs = [restorer(self.model, tile, self.overlap)(degraded[None])]
        seconds = time.perf_counter() - start
        outputs = [o[0].clamp(0, 1) for o in outputs]
        if not all(torch.isfinite(o).all() for o in outputs):
            raise ImageError("the model's output is not finite (NaN or Inf): its weights are broken")
        job.stage = "writing"
        self._write(job, "input", degraded)
        self._write(job, "restored", outputs[-1])
        result: dict = {"model": self.description, "seconds": round(seconds, 3), "width": width, "height": height,
                        "tile": tile, "degradation": job.degradation, "images": ["input", "restored"]}
        if self.sipl:
            for i, iterate in enumerate(outputs[:-1]):
                self._write(job, f"iterate-{i}", iterate)
            job.files[f"iterate-{len(outputs) - 1}"] = job.files["restored"]  # the last iterate: written once
            result["iterates"] = [f"iterate-{i}" for i in range(len(outputs))]
        if self._prompts.modules:
            result["prompts"] = self._prompts.summary()
        if clean is not None:
            result["metrics"] = {name: {"psnr": round(float(psnr(image[None], clean[None])), 2),
                                        "ssim": round(float(ssim(image[None], clean[None])), 4)}
                                 for name, image in (("input", degraded), ("restored", outputs[-1]))}
            if self.sipl:
                result["metrics"]["iterates"] = [round(float(psnr(o[None], clean[None])), 2) for o in outputs]
        return result

    def _write(self, job: Job, name: str, image: torch.Tensor) -> None:
        path = self.folder / job.id / f"{name}.png"
        write_image(path, image)
        job.files[name] = path

    def _finish(self, job: Job, outcome: str) -> None:
        """Forgets the oldest finished jobs beyond `keep` (their files deleted), then publishes `job`'s
        outcome ("done" or "error"): a client that sees it finished sees the old jobs gone."""
        with self._lock:
            finished = [j for j in self.jobs.values() if j.state in ("done", "error") or j is job]
            for old in sorted(finished, key=lambda j: j.number)[:max(0, len(finished) - self.keep)]:
                del self.jobs[old.id]
                shutil.rmtree(self.folder / old.id, ignore_errors=True)
            job.state = outcome
