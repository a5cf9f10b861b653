"""Atomic writes: the destination holds the old file or the complete new one, with a new file's
usual permissions, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
import stat

import pytest

from pyairir._files import atomic_path, write_text_atomic


def test_written_file_gets_the_permissions_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "sub" / "a.json", "{}")
    finally:
        os.umask(old)
    target = tmp_path / "sub" / "a.json"
    assert target.read_text() == "{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path / "sub") == ["a.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.suffix == ".txt"
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["b.txt"]


def test_temporary_names_are_recognised(tmp_path):
    """What atomic_path leaves behind when killed mid-write is recognised (and skipped as input)."""
    from pyairir._files import atomic_path, is_temporary
    from pyairir.data.io import list_images

    seen = []
    with atomic_path(tmp_path / "photo.png") as temporary:
        seen.append(temporary.name)
        temporary.write_bytes(b"x")
    assert is_temporary(seen[0]) and not is_temporary("photo.png") and not is_temporary(".hidden.png")
    assert not is_temporary(".photo.png.abc.png") and is_temporary(".latest.k3j_h5g6")
    (tmp_path / ".photo.png.k3j_h5g6.png").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path, "test")] == ["photo.png"]
