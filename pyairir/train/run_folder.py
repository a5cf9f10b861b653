"""A training run's output folder: one run per folder, one process at a time, checkpoints that are
never lost.

    out/
      .lock              advisory lock (fcntl) held by the training process; holds its pid
      config.json        the configuration of the latest start or resume
      checkpoint-<step>/ model.safetensors, state.pt, config.json
      latest             the name of the newest checkpoint
      resume.log         what changed at each resume (written only when something did)

A checkpoint is written to `.checkpoint-<step>.<pid>.tmp` and renamed into place; a checkpoint of
the same step already there is first renamed aside and deleted only once the new one and `latest`
are published. A process killed between those renames leaves the old one set aside, and the next
start (`remove_stale`) puts it back; a `latest` that names a missing or truncated checkpoint is
passed over by `find_checkpoint` for the newest complete one, saying so.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from pyairir._files import is_temporary, write_text_atomic

LOCK = ".lock"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# What pyairir leaves behind when killed mid-write: checkpoint folders being written or set aside,
# and atomic_path's temporary files (`latest`, config.json).
_STALE = re.compile(r"\.checkpoint-\d+\.\d+\.(tmp|old)")


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked (in use, holding another run, not a folder)."""


class RunLock:
    """The advisory lock of a run folder, held from `acquire` until `release` (or the process ends:
    the kernel drops an flock with its last descriptor, so a killed run never leaves it stuck)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._handle = None

    def acquire(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderError(f"output folder {str(self.folder)!r} is a file; out must name a folder for the run")
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(f"output folder {str(self.folder)!r} is in use by another training process "
                                 f"(pid {owner}); wait for it to finish or choose another out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def checkpoints(folder: Path) -> list[Path]:
    """The folder's checkpoint-<step> folders, newest step first."""
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.fullmatch(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: -int(_CHECKPOINT.fullmatch(p.name)[1]))


def holds_a_run(folder: Path) -> bool:
    """Whether `folder` holds anything but its lock file and stale temporaries."""
    return folder.is_dir() and any(p.name != LOCK and not _is_stale(p) for p in folder.iterdir())


def _is_stale(path: Path) -> bool:
    return bool(_STALE.fullmatch(path.name)) or is_temporary(path)


def remove_stale(folder: Path) -> list[str]:
    """Cleans up after killed writers (call with the lock held): a checkpoint set aside for a
    replacement that was never published is renamed back; the rest is deleted. Returns what was
    done, one phrase per file."""
    done = []
    for path in sorted(folder.iterdir()):
        match = _STALE.fullmatch(path.name)
        if match and match[1] == "old":
            original = folder / path.name[1:].split(".")[0]  # .checkpoint-N.<pid>.old -> checkpoint-N
            if not original.exists():
                os.replace(path, original)
                done.append(f"restored {original.name} (set aside by a killed write)")
    for path in sorted(folder.iterdir()):
        if _is_stale(path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            done.append(f"removed {path.name}")
    return done


def move_aside(folder: Path) -> Path:
    """Renames `folder` to `<folder>.old-<date-time>` (a free name) and returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    os.replace(folder, target)
    return target


def save_checkpoint(folder: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    config_json: str) -> Path:
    """Writes checkpoint-<step> (model.safetensors, state.pt, config.json) and points `latest` at it."""
    final = folder / f"checkpoint-{step}"
    temporary = folder / f".checkpoint-{step}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, temporary / "model.safetensors")
    torch.save(state, temporary / "state.pt")
    (temporary / "config.json").write_text(config_json)
    aside = None
    if final.exists():
        aside = folder / f".checkpoint-{step}.{os.getpid()}.old"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(temporary, final)
    write_text_atomic(folder / "latest", final.name)
    if aside is not None:
        shutil.rmtree(aside)
    return final


@dataclass
class Checkpoint:
    folder: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    config: dict[str, Any]


def read_checkpoint(folder: Path) -> Checkpoint:
    """Loads a checkpoint folder; raises ValueError naming the file that is missing or unreadable,
    pickle.UnpicklingError if state.pt holds more than weights_only=True loads (code)."""
    loaders: dict[str, Callable[[Path], Any]] = {
        "model.safetensors": load_file,
        "state.pt": lambda p: torch.load(p, map_location="cpu", weights_only=True),
        "config.json": lambda p: json.loads(p.read_text()),
    }
    loaded = {}
    for name, load in loaders.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is missing")
        try:
            loaded[name] = load(path)
        except pickle.UnpicklingError:
            raise  # weights_only refused what the file holds (code): not a file to pass over quietly
        except Exception as error:  # truncated or corrupt: any other loader error means unusable
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else ""
            raise ValueError(f"{str(path)!r} cannot be read ({type(error).__name__}: {reason})") from None
    return Checkpoint(folder, loaded["model.safetensors"], loaded["state.pt"], loaded["config.json"])


def find_checkpoint(folder: Path, say: Callable[[str], None] = print) -> Checkpoint | None:
    """The checkpoint `latest` names, or, if `latest` is missing, points at nothing or at a
    checkpoint with a missing or truncated file, the newest complete one (saying why); None if
    the folder holds no checkpoint; RunFolderError if it holds only unusable ones."""
    pointer = folder / "latest"
    candidates = checkpoints(folder)
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        candidates = [named] + [c for c in candidates if c != named]
    problems = []
    for candidate in candidates:
        if not candidate.is_dir():
            problems.append(f"{str(candidate)!r} does not exist")
            continue
        try:
            found = read_checkpoint(candidate)
        except ValueError as error:
            problems.append(str(error))
            continue
        if problems:
            say(f"pyairir train: skipped {'; '.join(problems)}; resuming from {str(candidate)!r}, "
                "the newest complete checkpoint")
        return found
    if problems:
        raise RunFolderError(f"no usable checkpoint in {str(folder)!r} to resume from: {'; '.join(problems)}; "
                             "pass --overwrite to move this run aside and start a new one")
    return None
