"""The memory cache's effect on fast inference: time, page faults and peak memory of each fast
backbone at 3x256x256 with pyairir.runtime's cache on (DEFAULT_CACHE_LIMIT) and off (limit 0),
each setting in a fresh process (so that its peak resident memory is its own).

    python -m benchmarks.memory_cache [--passes 4] [--size 256] [models ...]

Prints one row per model and setting: the median time of `passes` forward passes after a first
one, their median page faults (minor, from getrusage), the process's peak RSS and what the cache
holds at the end; then the ratios. Peak memory repeats from run to run, page faults less so; on a
shared virtual machine the times may not (the same setting has measured 333 and 446 ms for
NAFNet-w32).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

import pyairir

MODELS = ["promptir", "restormer", "adair", "nafnet_sidd_w32"]


def measure(name: str, limit: int, size: int, passes: int) -> dict:
    """Times `passes` forward passes of fast `name` after a first one, with the cache limit `limit`."""
    pyairir.runtime.set_cached_memory_limit(limit)
    torch.manual_seed(0)
    model = pyairir.create_model(name, fast=True).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    seconds, faults = [], []
    with torch.no_grad():
        model(x)
        for _ in range(passes):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            model(x)
            seconds.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"ms": 1e3 * statistics.median(seconds), "faults": statistics.median(faults),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cached_mb": pyairir.runtime.cached_memory_bytes() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.passes < 1 or args.size < 8:
        parser.error(f"--passes must be >= 1 and --size >= 8, got {args.passes} and {args.size}")
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.size, args.passes)))
        return
    unknown = sorted(set(args.models) - set(pyairir.list_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {pyairir.list_models()}")
    print(f"fast fp32, 1x3x{args.size}x{args.size}, {torch.get_num_threads()} threads, median of {args.passes} passes")
    print("| model | cache | ms | page faults / pass | peak RSS (MB) | held after (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models:
        rows = {}
        for setting, limit in (("off", 0), ("on", pyairir.runtime.DEFAULT_CACHE_LIMIT)):
            command = [sys.executable, "-m", "benchmarks.memory_cache", "--child", name, str(limit),
                       "--size", str(args.size), "--passes", str(args.passes)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows[setting] = json.loads(out.strip().splitlines()[-1])
            r = rows[setting]
            print(f"| {name} | {setting} | {r['ms']:.0f} | {r['faults']:.0f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['cached_mb']:.0f} |", flush=True)
        print(f"| {name} | ratio | off/on {rows['off']['ms'] / rows['on']['ms']:.2f} | | "
              f"on/off {rows['on']['peak_rss_mb'] / rows['off']['peak_rss_mb']:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
