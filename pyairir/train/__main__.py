"""python -m pyairir.train CONFIG [key=value ...] [--resume], e.g. under torchrun."""

import sys

from pyairir.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
