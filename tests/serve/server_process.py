"""`pyairir serve` started as a user starts it (its own process, any free port), for the browser and
load tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve(*arguments: str, environment: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """(the page's URL, the server process, run with `environment` added to this one's); the server
    is stopped with Ctrl+C (SIGINT) after."""
    process = subprocess.Popen([sys.executable, "-m", "pyairir", "serve", "--port", "0", *arguments], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(environment or {})})
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://[\d.]+:\d+/)", line)
        if not match:
            process.kill()
            raise RuntimeError(f"pyairir serve did not start: {line}{process.stderr.read()}")
        yield match[1], process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def resident_bytes(process: subprocess.Popen) -> int:
    """The process's resident memory (Linux: VmRSS in /proc)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc")
