"""One SIPL-PromptIR run in this process, for the benchmarks that need a fresh process's peak
memory. Prints one JSON line: {"seconds": ..., "peak_rss_mb": ...}.

    python -m benchmarks.sipl_run --size 512 --what guided [--fast]    # without --fast: the official structure
    python -m benchmarks.sipl_run --size 1024 --what restore --iterations 2 --fast
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import pyairir
from pyairir.paradigms import SIPL
from tests import official_like


def sipl_promptir(fast: bool) -> SIPL:
    """SIPL around the full-size PromptIR (random weights: the cost does not depend on them)."""
    torch.manual_seed(0)
    model = SIPL(pyairir.create_model("promptir")).eval()
    with torch.no_grad():  # a non-zero dictionary, as a trained one is
        for name, p in model.named_parameters():
            if name.startswith("privileged_dictionary"):
                p.normal_()
    return pyairir.nn.set_fast(model, fast)


def guided_pass(fast: bool, size: int):
    """The guided pass F(I_d, I_prev) to time, privileged features computed: pyairir's fast SIPL,
    or the official structure (tests/official_like.PromptIR_ProxyFusion) with the same weights."""
    generator = torch.Generator().manual_seed(0)
    degraded, previous = (torch.rand(1, 3, size, size, generator=generator) for _ in range(2))
    with torch.no_grad():
        if fast:
            model = sipl_promptir(fast=True)
            privileged = model.privileged_features(previous, restore=False)
        else:
            model = official_like.PromptIR_ProxyFusion().eval()
            model.load_state_dict(sipl_promptir(fast=False).state_dict())
            privileged = model.privileged_features(previous)
    return lambda: model(degraded, privileged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--what", choices=["guided", "restore"], default="guided")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args()
    if args.what == "guided":
        run = guided_pass(args.fast, args.size)
    else:
        model = sipl_promptir(args.fast)
        degraded = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        run = lambda: model.restore(degraded, iterations=args.iterations)  # noqa: E731
    with torch.no_grad():
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (VmHWM). Not getrusage's ru_maxrss,
    which Linux carries over from the parent through fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


if __name__ == "__main__":
    main()
