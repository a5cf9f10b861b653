"""How close pyairir.eval.memory's estimate comes to the real peak: each model restores one
image in a fresh process; the peak resident memory above the loaded model is set against
peak_activation_bytes.

    python -m benchmarks.memory_estimate [--size 384] [--models nafnet_demo restormer promptir]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

MEASURE = """
import resource, sys, torch, pyairir
from pyairir.eval.memory import peak_activation_bytes
name, size = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
model = pyairir.create_model(name).eval()
with torch.no_grad():
    model(torch.rand(1, 3, 16, 16))
estimate = peak_activation_bytes(model, size, size)
status = open('/proc/self/status').read()
base = int(status.split('VmRSS:')[1].split()[0]) * 1024
with torch.no_grad():
    model(torch.rand(1, 3, size, size))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"| {name} | {size} | {estimate / 2 ** 20:.0f} | {(peak - base) / 2 ** 20:.0f} | {(peak - base) / estimate:.2f} |")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--models", nargs="+", default=["nafnet_demo", "restormer", "promptir"])
    args = parser.parse_args()
    print("| model | size | estimate (MiB) | measured (MiB) | measured / estimate |\n|---|---:|---:|---:|---:|")
    for name in args.models:
        subprocess.run([sys.executable, "-c", MEASURE, name, str(args.size)], check=True)


if __name__ == "__main__":
    main()
