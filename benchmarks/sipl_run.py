"""One SIPL-PromptIR run in this process, for the benchmarks that need a fresh process's peak
memory. Prints one JSON line: {"seconds": ..., "peak_rss_mb": ...}.

    python -m benchmarks.sipl_run --size 512 --what guided [--fast]
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


def sipl_promptir(fast: bool) -> SIPL:
    """SIPL around the full-size PromptIR (random weights: the cost does not depend on them)."""
    torch.manual_seed(0)
    model = SIPL(pyairir.create_model("promptir")).eval()
    with torch.no_grad():  # a non-zero dictionary, as a trained one is
        for name, p in model.named_parameters():
            if name.startswith("privileged_dictionary"):
                p.normal_()
    return pyairir.nn.set_fast(model, fast)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--what", choices=["guided", "restore"], default="guided")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args()
    model = sipl_promptir(args.fast)
    generator = torch.Generator().manual_seed(0)
    degraded = torch.rand(1, 3, args.size, args.size, generator=generator)
    with torch.no_grad():
        start = time.perf_counter()
        if args.what == "guided":
            privileged = model.privileged_features(torch.rand(1, 3, args.size, args.size, generator=generator),
                                                   restore=False)
            start = time.perf_counter()
            model(degraded, privileged)
        else:
            model.restore(degraded, iterations=args.iterations)
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
