"""Parameter and MAC counts of the registered backbones, as the papers report them.

    python -m pyairir.models.complexity            # every model at 3x256x256
    python -m pyairir.models.complexity promptir --size 512

Counts run on the meta device (no memory, no arithmetic): MACs are half the
FLOPs torch.utils.flop_counter attributes to convolutions and matrix products.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyairir.models.registry import create_model, list_models


def count(model: nn.Module, shape: tuple[int, int, int, int] = (1, 3, 256, 256)) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one forward on an input of `shape`) of a model on the meta device."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(shape, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def count_registered(name: str, size: int = 256) -> tuple[int, int]:
    """count() of create_model(name) at 3 x size x size."""
    with torch.device("meta"):
        model = create_model(name)
    return count(model, (1, 3, size, size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list_models(), help="models (default: all)")
    parser.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    args = parser.parse_args(argv)
    print(f"{'model':<20} {'params (M)':>11} {'GMACs @3x' + str(args.size) + 'x' + str(args.size):>18}")
    for name in args.names:
        params, macs = count_registered(name, args.size)
        print(f"{name:<20} {params / 1e6:>11.2f} {macs / 1e9:>18.2f}")


if __name__ == "__main__":
    main()
