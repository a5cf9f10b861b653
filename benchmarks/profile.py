"""Where the time of a fast model goes, op by op, against each op's roofline on this machine.

    python -m benchmarks.profile promptir [--size 256]     # prints the table
    pytest benchmarks/ -k profile                         # the same for PromptIR, Restormer, NAFNet,
                                                          # into .benchmarks/ratios.json and docs/benchmarks.md

One forward pass runs under a dispatch mode that times every aten and pyairir op as it executes
(wall time; the ops run one after another on the calling thread, each using every thread) and
counts its floating-point operations (torch.utils.flop_counter's formulas, which count matmuls
and convolutions only, plus pyairir's ops registered below, counted alike) and the bytes it reads
and writes (its tensor arguments and results). Ops are grouped by kind (1x1 convolution, 3x3
depthwise convolution, ...). The roofline of a group is min(peak FLOP/s, bandwidth x FLOPs /
bytes), with the peak measured here as a 2048 x 2048 fp32 matrix product and the bandwidth as a
copy of 256 MB, both on the benchmark's threads; a group's fraction of roofline is its achieved
rate over that bound.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

import pyairir

VIEWS = {"aten.view", "aten._unsafe_view", "aten.as_strided", "aten.t", "aten.transpose", "aten.permute",
         "aten.expand", "aten.slice", "aten.split", "aten.chunk", "aten.unsqueeze", "aten.squeeze", "aten.select",
         "aten.detach", "aten.alias", "aten.split_with_sizes", "aten.unbind"}


def _heads_flops(q: torch.Tensor, heads: int, tokens_kv: int) -> int:
    b, c, h, w = q.shape
    d = c // heads
    return 2 * 2 * b * heads * d * tokens_kv * h * w


def _mdta_flops(q, k, v, temperature, heads, dw_weight=None, dw_bias=None, project_weight=None, *args,
                **kwargs) -> int:
    """Two GEMMs per image and head: the d x d Gram over N pixels and the map applied to v; a fused
    depthwise filter as `conv 3x3 depthwise` counts (2 x 9 per value of q, k and v) and a folded
    projection as `conv 1x1` counts (2 x C per value of the output), though folded it takes the
    place of the map's product rather than adding to it."""
    b, c, h, w = q.shape
    d = c // heads
    flops = 2 * 2 * b * heads * d * d * h * w
    flops += 0 if dw_weight is None else 2 * 9 * 3 * q.numel()
    return flops + (0 if project_weight is None else 2 * c * q.numel())


def _proxy_attention_flops(q, k, v, temperature, heads, *args, **kwargs) -> int:
    """Two GEMMs per image and head: scores (Nq x Nk over d) and their product with v."""
    return _heads_flops(q, heads, k.shape[2] * k.shape[3])


def _gated_gelu_flops(x, dw_weight, *args, **kwargs) -> int:
    """Its fused 3x3 depthwise convolution, counted as flop_counter counts `conv 3x3 depthwise`
    (2 x 9 per input value); the gate's pointwise work is not counted, as for aten's pointwise ops."""
    return 0 if dw_weight is None else 2 * 9 * x.numel()


def _prepacked_conv_flops(x, weight, bias, padding, stride, dilation, *args, **kwargs) -> int:
    """oneDNN's convolution on a prepacked weight (pyairir.nn.prepacked), counted as flop_counter counts
    `conv`: 2 x the weight's (cin / groups x kh x kw) per output value."""
    cout, cin, kh, kw = weight.shape
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1
           for size, p, d, k, s in zip(x.shape[2:], padding, dilation, (kh, kw), stride)]
    return 2 * x.shape[0] * cout * out[0] * out[1] * cin * kh * kw


def _pointwise_conv_flops(x, packed_weight, packed_bias, out_channels, gate, normalize, eps, upscale, *args,
                          **kwargs) -> int:
    """NAFNet's fused 1x1 convolution (pyairir.nn.pointwise), counted as `conv 1x1`: 2 x cin per value
    of the convolution's output (before the gate halves it, or the shuffle spreads it)."""
    b, cin, h, w = x.shape
    cout = 2 * out_channels if gate else out_channels * upscale ** 2
    return 2 * b * h * w * cin * cout


def _nafblock_head_flops(inp, w1, b1, dw_weight, *args, **kwargs) -> int:
    """conv1 as `conv 1x1` counts (2 x c per output value) and conv2 as `conv 3x3 depthwise` (2 x 9)."""
    b, c, h, w = inp.shape
    d = dw_weight.shape[0]
    return 2 * b * h * w * d * (c + 9)


def _nafblock_tail_flops(t, mean, inp, attention_weight, attention_bias, w3, b3, w4, b4, w5, *args, **kwargs) -> int:
    """SCA's conv on the pooled means (t's channels -> t's channels, one pixel), conv3 (t's channels -> c),
    conv4 (c -> 2f) and conv5 (f -> c), as `conv 1x1` counts them."""
    b, k3, h, w = t.shape
    c, f = inp.shape[1], w5.shape[1]
    return 2 * b * k3 * k3 + 2 * b * h * w * (k3 * c + c * 2 * f + f * c)


def _output_conv_flops(x, weight, *args, **kwargs) -> int:
    """The 3x3 convolution to a few channels (pyairir.nn.output_conv) as flop_counter counts it: 2 x 9 x cin per
    output value (the residual add uncounted, like the eager add)."""
    b, c, h, w = x.shape
    return 2 * b * h * w * weight.shape[0] * c * 9


PYAIRIR_FLOPS = {"pyairir.mdta": _mdta_flops, "pyairir.proxy_attention": _proxy_attention_flops,
                 "pyairir.gated_gelu": _gated_gelu_flops, "mkldnn._convolution_pointwise": _prepacked_conv_flops,
                 "pyairir_cpu.pointwise_conv": _pointwise_conv_flops, "pyairir_cpu.nafblock_head": _nafblock_head_flops,
                 "pyairir_cpu.nafblock_tail": _nafblock_tail_flops, "pyairir_cpu.output_conv": _output_conv_flops}


def _kind(name: str, args: tuple) -> str:
    """The group an op belongs to: convolutions by kernel shape, everything else by name."""
    if name == "mkldnn._convolution_pointwise":
        return "conv " + "x".join(map(str, args[1].shape[2:]))
    if name == "aten.convolution":
        weight, groups = args[1], args[8]
        k = "x".join(map(str, weight.shape[2:]))
        return f"conv {k}" + (" depthwise" if groups > 1 and groups == weight.shape[0] else "")
    return name


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t.is_mkldnn:  # an opaque oneDNN tensor (a prepacked weight): no storage to key on
            key = ("mkldnn", id(t))
        else:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


@dataclass
class OpRow:
    kind: str
    calls: int = 0
    seconds: float = 0.0
    flops: int = 0
    bytes: int = 0


class OpProfile(TorchDispatchMode):
    """Per op kind: calls, seconds, FLOPs, bytes read and written."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, OpRow] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        start = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        if name in VIEWS:
            return out
        row = self.rows.setdefault(_kind(name, args), OpRow(_kind(name, args)))
        row.calls += 1
        row.seconds += seconds
        if func.overloadpacket in flop_registry:
            row.flops += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        elif name in PYAIRIR_FLOPS:
            row.flops += PYAIRIR_FLOPS[name](*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        row.bytes += _bytes(tensors)
        return out


def machine_roofline(threads: int | None = None) -> tuple[float, float]:
    """(peak GFLOP/s of a 2048^2 fp32 matmul, GB/s of a 256 MB copy), best of 5, on this machine."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    src, dst = torch.randn(64 * 2 ** 20), torch.empty(64 * 2 ** 20)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    gflops = 2 * 2048 ** 3 / best(lambda: torch.mm(a, b)) / 1e9
    gbs = 2 * src.numel() * 4 / best(lambda: dst.copy_(src)) / 1e9
    return gflops, gbs


def profile_model(model: torch.nn.Module, x: torch.Tensor, repeats: int = 2) -> tuple[list[OpRow], float]:
    """(rows by descending time, total seconds of one forward) of the fastest of `repeats` profiled passes."""
    best = None
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            profile = OpProfile()
            start = time.perf_counter()
            with profile:
                model(x)
            total = time.perf_counter() - start
            if best is None or total < best[1]:
                best = (profile, total)
    rows = sorted(best[0].rows.values(), key=lambda row: -row.seconds)
    return rows, best[1]


def table(rows: list[OpRow], total: float, peak_gflops: float, bandwidth_gbs: float, top: int = 12) -> list[dict]:
    """The profile as records: share of time, achieved GFLOP/s and GB/s, roofline and fraction of it."""
    records = []
    for row in rows[:top]:
        achieved_gflops = row.flops / row.seconds / 1e9 if row.seconds else 0.0
        achieved_gbs = row.bytes / row.seconds / 1e9 if row.seconds else 0.0
        if row.flops:
            roofline = min(peak_gflops, bandwidth_gbs * row.flops / row.bytes)
            fraction = achieved_gflops / roofline
            bound = "compute" if roofline == peak_gflops else "memory"
        else:
            roofline, fraction, bound = bandwidth_gbs, achieved_gbs / bandwidth_gbs, "memory"
        records.append({"op": row.kind, "calls": row.calls, "ms": row.seconds * 1e3, "share": row.seconds / total,
                        "gflops": achieved_gflops, "gbs": achieved_gbs, "bound": bound,
                        "fraction_of_roofline": fraction})
    return records


def format_records(records: list[dict]) -> list[str]:
    lines = ["| op | calls | ms | share | GFLOP/s | GB/s | bound by | of roofline |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {r['op']} | {r['calls']} | {r['ms']:.1f} | {r['share']:.0%} | {r['gflops']:.1f} | {r['gbs']:.1f} | "
              f"{r['bound']} | {r['fraction_of_roofline']:.0%} |" for r in records]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="promptir")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    peak, bandwidth = machine_roofline()
    torch.manual_seed(0)
    model = pyairir.create_model(args.model, fast=True).eval()
    rows, total = profile_model(model, torch.rand(1, 3, args.size, args.size))
    print(f"{args.model} fast fp32, 1x3x{args.size}x{args.size}, {torch.get_num_threads()} threads: "
          f"{total * 1e3:.0f} ms; machine: {peak:.0f} GFLOP/s (2048^2 matmul), {bandwidth:.1f} GB/s (copy)")
    print("\n".join(format_records(table(rows, total, peak, bandwidth, top=20))))


if __name__ == "__main__":
    main()
