"""Whole backbones on one 3x256x256 image (batch 1), same weights in every variant: the official
code's structure (tests/official_like.py, whose keys and outputs are the official ones) in eager
PyTorch, with pyairir.accelerate(), and under torch.compile (default, and freezing=True for
inference); the same weights exported by `pyairir export` and run in ONNX Runtime and OpenVINO
(same process, same threads); against pyairir's fast model; in fp32, in bf16 (the same bf16
weights; OpenVINO's bf16 inference where the CPU has bf16 instructions) and under bf16 autocast;
the exported file quantized to int8 by ONNX Runtime's quantizer, run by both engines (not like
for like: pyairir has no int8 path; the report names the CPU's VNNI/AMX extensions and the int8
error); and a training step."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch

import pyairir
from benchmarks.conftest import interleaved, record_preparation, record_preparation_time
from benchmarks.machine import cpu_flags
from pyairir.export import export_onnx, relative_error, run_onnx
from tests import official_like

SIZE = 256
OFFICIAL = {
    "promptir": official_like.PromptIR,
    "restormer": official_like.Restormer,
    "adair": official_like.AdaIR,
    "nafnet_sidd_w32": lambda: official_like.NAFNet(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8],
                                                    dec_blk_nums=[2, 2, 2, 2]),
}
GROUP = {"promptir": "promptir inference", "restormer": "restormer inference", "adair": "adair inference",
         "nafnet_sidd_w32": "nafnet inference"}
PEERS = ["onnxruntime fp32", "openvino fp32", "openvino bf16", "onnxruntime int8", "openvino int8"]
CALIBRATION = (3, 128, 128)  # int8 ranges from 3 random 128x128 images: for timing; the error is reported, not claimed
VARIANTS = ["official eager fp32", "fast fp32", "fast fp32 without memory cache", "accelerate fp32", "compile fp32",
            "compile fp32 freezing",
            "official eager bf16 autocast", "compile bf16 autocast", "compile bf16", "compile bf16 freezing",
            "fast bf16", *PEERS]
EXPORTS = Path(tempfile.mkdtemp(prefix="pyairir-benchmarks-onnx-"))


def fast_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pyairir.create_model(name, fast=True).eval()


def official_model(name: str) -> torch.nn.Module:
    """The official structure holding the fast model's weights."""
    model = OFFICIAL[name]()
    model.load_state_dict(fast_model(name).state_dict())
    return model.eval()


def exported(name: str) -> Path:
    """The fast model's weights as `pyairir export` writes them (once per model and run)."""
    path = EXPORTS / f"{name}.onnx"
    if not path.is_file():
        record_preparation_time(GROUP[name], "pyairir export (ONNX)",
                                lambda: export_onnx(fast_model(name), path, size=(SIZE, SIZE), verify=False))
    return path


def quantized(name: str) -> Path:
    """The fast model's weights quantized to int8 by ONNX Runtime's quantizer (once per model and
    run): exported with dynamic sizes, QDQ format, int8 weights per output channel, uint8
    activations with min/max ranges from CALIBRATION random images (3x128x128: the calibrator keeps
    every intermediate tensor of two images, about 12 GB for PromptIR at that size), then the input
    fixed to 1x3x256x256. ONNX Runtime and OpenVINO both run it in int8. Its largest error against
    the fast fp32 model at 256x256 goes in the preparation line, for the reader to weigh."""
    path = EXPORTS / f"{name}.int8.onnx"
    if path.is_file():
        return path
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = (torch.rand(1, 3, *CALIBRATION[1:], generator=torch.Generator().manual_seed(100 + i)).numpy()
                           for i in range(CALIBRATION[0]))

        def get_next(self) -> dict | None:
            image = next(self.images, None)
            return None if image is None else {"degraded": image}

    start = time.perf_counter()
    dynamic, prepared = EXPORTS / f"{name}.dynamic.onnx", EXPORTS / f"{name}.prepared.onnx"
    export_onnx(fast_model(name), dynamic, size=CALIBRATION[1:], dynamic=True, verify=False)
    quant_pre_process(str(dynamic), str(prepared), skip_symbolic_shape=True)
    # ranges merged every 2 images (an odd count: onnxruntime 1.32 finds no data when the last merge empties the list)
    quantize_static(str(prepared), str(prepared), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"CalibMaxIntermediateOutputs": 2})
    model = onnx.load(str(prepared))
    make_input_shape_fixed(model.graph, "degraded", [1, 3, SIZE, SIZE])
    onnx.save(model, str(path))
    seconds = time.perf_counter() - start
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = fast_model(name)(x)
    error = relative_error(run_onnx(path, "onnxruntime", x)(), expected)
    record_preparation(GROUP[name], f"int8 quantization (ONNX Runtime's; largest error {error:.1e} of the output's "
                       "largest value against fast fp32)", seconds)
    return path


def peer(name: str, variant: str, x: torch.Tensor):
    engine, precision = variant.split()
    pytest.importorskip(engine)
    if precision == "bf16" and "avx512_bf16" not in cpu_flags() and "amx_bf16" not in cpu_flags():
        pytest.skip("OpenVINO's bf16 inference needs a CPU with bf16 instructions")
    if precision == "int8":
        path = quantized(name)  # a quantizer failure is an error, not a skip
        try:
            return run_onnx(path, engine, x, threads=torch.get_num_threads())
        except RuntimeError as error:  # OpenVINO 2026.4 cannot compile AdaIR's int8 file ("empty child edge")
            pytest.skip(f"{engine} cannot load the int8 file: {' '.join(str(error).split())[-160:]}")
    return run_onnx(exported(name), engine, x, threads=torch.get_num_threads(), precision=precision.replace("fp", "f"))


def inference(name: str, variant: str):
    """The callable to time for `variant` of model `name`, with compilation (if any) done."""
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    if variant in PEERS:
        return peer(name, variant, x)
    bf16 = variant.endswith(("bf16", "bf16 freezing"))
    net = fast_model(name) if variant.startswith("fast") else official_model(name)
    if variant.startswith("accelerate"):
        pyairir.accelerate(net)
    if bf16:
        net, x = net.to(torch.bfloat16), x.to(torch.bfloat16)
        if variant.startswith("fast"):
            pyairir.nn.set_fast(net)  # the conv weights back to channels_last after the cast
    autocast = variant.endswith("autocast")
    no_cache = variant.endswith("without memory cache")  # pyairir.runtime's cache of freed blocks off for this pass
    if variant.startswith("compile"):
        net = torch.compile(net, options={"freezing": True} if variant.endswith("freezing") else None)

    def run():
        if no_cache:
            pyairir.runtime.set_cached_memory_limit(0)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return net(x)
        finally:
            if no_cache:
                pyairir.runtime.set_cached_memory_limit(pyairir.runtime.DEFAULT_CACHE_LIMIT)

    if variant.startswith("compile"):
        with torch.no_grad():
            record_preparation_time(GROUP[name], f"torch.compile {variant.removeprefix('compile ')} (first call)", run)
    return run


NO_CACHE = "fast fp32 without memory cache"


def compare(measure, name: str, variants: list[str]) -> None:
    """Times `variants` of model `name` interleaved (conftest.interleaved: 5 rounds, each variant
    once a round in a shuffled order), so that their ratios do not depend on when the machine was busy. The variant
    without the memory cache runs after them, on its own: turning the cache off frees its blocks,
    which would leave the next round's fast fp32 pass without them."""
    torch._dynamo.reset()  # the compiled graphs of the previous model's test
    fns = {}
    for variant in variants:
        if variant == NO_CACHE:
            continue
        try:
            fns[variant] = inference(name, variant)
        except pytest.skip.Exception as reason:  # a peer engine not installed, no bf16 instructions
            warnings.warn(f"{GROUP[name]}: {variant} not measured: {reason}", stacklevel=1)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):  # compiled before, not in a round
        interleaved(GROUP[name], fns)
        if NO_CACHE in variants:
            measure(GROUP[name], NO_CACHE, inference(name, NO_CACHE), rounds=5)


@pytest.mark.parametrize("name", ["promptir", "restormer"])
def test_inference(measure, name):
    compare(measure, name, VARIANTS)


def test_adair_inference(measure):
    """AdaIR. bf16 is compared under autocast only: torch has no bf16 FFT on the CPU, so the official
    code cannot run with bf16 weights (pyairir's band split, matrix products, runs in float32)."""
    compare(measure, "adair", ["official eager fp32", "fast fp32", NO_CACHE, "accelerate fp32", "compile fp32",
                               "official eager bf16 autocast", "compile bf16 autocast", "fast bf16", *PEERS])


def test_nafnet_inference(measure):
    compare(measure, "nafnet_sidd_w32", ["official eager fp32", "fast fp32", NO_CACHE, "accelerate fp32",
                                         "compile fp32", *PEERS])


@pytest.mark.parametrize("variant", ["official eager", "fast"])
def test_training_step(measure, variant):
    net = (fast_model("promptir") if variant == "fast" else official_model("promptir")).train()
    generator = torch.Generator().manual_seed(0)
    degraded, clean = torch.rand(2, 3, 128, 128, generator=generator), torch.rand(2, 3, 128, 128, generator=generator)

    def step():
        net.zero_grad(set_to_none=True)
        (net(degraded) - clean).abs().mean().backward()

    measure("promptir training step", variant, step, rounds=3)
