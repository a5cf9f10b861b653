"""ONNX export of any pyairir backbone or paradigm, for inference, checked by running the file.

    report = pyairir.export_onnx(model, "model.onnx", size=(256, 256))      # or dynamic=True
    print(report)   # export time, file size, and the error of each engine against pyairir

pyairir's fused kernels are not ONNX operators, so the graph is the eager reference computation
(the same function, tested equal to the kernels): the model is copied, the copy switched to its
eager modules (`pyairir.nn.set_fast(copy, False)`) and traced by torch.onnx's TorchScript
exporter into standard ONNX operators (opset 17). The file is then run by ONNX Runtime (and by
OpenVINO where it is installed) on random inputs and compared with `model` itself, in float32;
the largest error relative to the output's largest value must stay within `tolerance`.

What the graph computes: `model(degraded)` (LUPI: from the student's prior; CPL: with top-k
routing), or for SIPL with `iterations=T` the last image of its self-refinement
(`sipl.restore(degraded, T)[-1]`, the paper's loop). Input "degraded" (B, 3, H, W) in [0, 1],
output "restored". H and W must be multiples of the model's size multiple (8 for Restormer and
PromptIR, 16 for NAFNet; `pyairir.eval.restore` pads other sizes); `dynamic=True` leaves B, H and
W free within that rule and checks two sizes.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pyairir._files import atomic_path
from pyairir.models.checks import size_multiple

OPSET = 17
TOLERANCE = 1e-4


@dataclass
class Check:
    engine: str
    shape: tuple[int, ...]
    relative_error: float


@dataclass
class ExportReport:
    path: Path
    seconds: float
    megabytes: float
    dynamic: bool
    checks: list[Check] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"exported {self.path} ({self.megabytes:.1f} MB, {'dynamic B, H, W' if self.dynamic else 'static'}"
                 f" shape) in {self.seconds:.1f} s"]
        lines += [f"  {c.engine} on {'x'.join(map(str, c.shape))}: largest error {c.relative_error:.2e} of the "
                  f"output's largest value" for c in self.checks]
        return "\n".join(lines)


class SelfRefinement(nn.Module):
    """SIPL's inference as one graph: the last iterate of sipl.restore(degraded, iterations)."""

    def __init__(self, sipl: nn.Module, iterations: int) -> None:
        super().__init__()
        self.sipl, self.iterations = sipl, iterations

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return self.sipl.restore(degraded, iterations=self.iterations)[-1]


def inference_graph(model: nn.Module, iterations: int | None = None) -> nn.Module:
    """An eager copy of `model` computing what the ONNX file will (see the module docstring)."""
    from pyairir.nn import set_fast
    from pyairir.paradigms import SIPL

    if iterations is not None and not isinstance(model, SIPL):
        raise ValueError(f"export_onnx: iterations are SIPL's self-refinement; {type(model).__name__} has none")
    if iterations is not None and iterations < 0:
        raise ValueError(f"export_onnx: iterations must be >= 0, got {iterations}")
    graph = set_fast(copy.deepcopy(model), False).float().eval()
    return SelfRefinement(graph, iterations) if iterations is not None else graph


def export_onnx(model: nn.Module, path: str | os.PathLike, size: tuple[int, int] = (256, 256), dynamic: bool = False,
                iterations: int | None = None, verify: bool = True, tolerance: float = TOLERANCE) -> ExportReport:
    """Writes `model` (a pyairir backbone or paradigm) to the ONNX file `path` (atomically) and,
    with `verify`, runs it in ONNX Runtime (and OpenVINO if installed) against `model` in float32.
    size: (H, W) of the traced input (and of the static graph). Raises ValueError on a bad
    argument and RuntimeError if an engine's result differs by more than `tolerance`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx: model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"export_onnx: the output file must end in .onnx, got {str(path)!r}")
    multiple = size_multiple(model)
    if len(size) != 2 or any(not isinstance(s, int) or s <= 0 or s % multiple for s in size):
        raise ValueError(f"export_onnx: size must be two positive multiples of {multiple} for {type(model).__name__}, "
                         f"got {tuple(size)}")
    graph = inference_graph(model, iterations)
    example = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    start = time.perf_counter()
    with atomic_path(path) as temporary, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (example,), str(temporary), input_names=["degraded"], output_names=["restored"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"degraded": axes, "restored": axes} if dynamic else None)
    report = ExportReport(path, time.perf_counter() - start, path.stat().st_size / 2 ** 20, dynamic)
    if verify:
        shapes = [(1, 3, *size)] + ([(2, 3, size[0] + 2 * multiple, size[1] + multiple)] if dynamic else [])
        report.checks = verify_onnx(path, model, shapes, iterations, tolerance)
    return report


def engines() -> list[str]:
    """The ONNX engines installed here, of those verify_onnx knows."""
    found = []
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
            found.append(name)
        except ImportError:
            pass
    return found


def run_onnx(path: str | os.PathLike, engine: str, image: torch.Tensor, threads: int | None = None,
             precision: str = "f32"):
    """A callable running the ONNX file on `image` (B, 3, H, W) in `engine`; returns a float32 tensor.
    precision: "f32", or "bf16" for OpenVINO's bf16 inference (OpenVINO otherwise picks bf16 by
    itself on CPUs with bf16 instructions; f32 is asked for explicitly)."""
    if precision not in ("f32", "bf16") or (precision == "bf16" and engine != "openvino"):
        raise ValueError(f"run_onnx: precision must be f32 (or bf16 for openvino), got {precision!r} for {engine}")
    x = image.float().contiguous().numpy()
    if engine == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: torch.from_numpy(session.run(None, {"degraded": x})[0])
    if engine == "openvino":
        import openvino

        config = {"INFERENCE_PRECISION_HINT": precision, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        return lambda: torch.from_numpy(request.infer({"degraded": x})[compiled.output(0)].copy())
    raise ValueError(f"unknown ONNX engine {engine!r}; known: onnxruntime, openvino")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference of got from expected, relative to expected's largest magnitude."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def verify_onnx(path: Path, model: nn.Module, shapes: list[tuple[int, ...]], iterations: int | None = None,
                tolerance: float = TOLERANCE) -> list[Check]:
    """Runs the file in every installed engine on random inputs of `shapes` and compares with `model`."""
    available = engines()
    if not available:
        raise RuntimeError("export_onnx: cannot verify the file: neither onnxruntime nor openvino is installed "
                           "(pip install onnxruntime), or pass verify=False / --no-verify")
    reference_model = model if next(model.parameters()).dtype == torch.float32 else copy.deepcopy(model).float()
    reference_model.eval()
    checks = []
    for shape in shapes:
        image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            if iterations is not None:
                expected = reference_model.restore(image, iterations=iterations)[-1]
            else:
                expected = reference_model(image)
        for engine in available:
            got = run_onnx(path, engine, image)()
            error = relative_error(got, expected)
            if not error <= tolerance:
                raise RuntimeError(f"export_onnx: {engine} on {tuple(shape)} differs from pyairir by {error:.2e} of "
                                   f"the output's largest value (tolerance {tolerance:.0e}); {path} is not trustworthy")
            checks.append(Check(engine, tuple(shape), error))
    return checks
