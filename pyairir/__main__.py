"""python -m pyairir ... is the `pyairir` command."""

from pyairir.cli import entry_point

entry_point()
