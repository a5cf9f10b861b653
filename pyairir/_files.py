"""Writing files atomically: readers see the old file or the complete new one, never a part."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _new_file_mode() -> int:
    """The permissions open() would give a new file: 0o666 without the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same folder, same suffix) for the block to write; once the
    block completes it is renamed over `path` with the permissions `path` had if it existed, a new
    file's usual ones otherwise (mkstemp makes it 0600), and if the block fails it is removed. The
    folder is created if missing. Temporary names are `.NAME.<8 characters>SUFFIX`
    (is_temporary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        mode = path.stat().st_mode & 0o7777 if path.is_file() else _new_file_mode()
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (see atomic_path)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named as atomic_path names its temporary files (left behind if the
    process was killed mid-write): `.NAME.` + mkstemp's 8 random characters + NAME's suffix."""
    match = _TEMPORARY.fullmatch(Path(path).name)
    return bool(match) and match["target"].endswith(match["suffix"] or "")


_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)?")
