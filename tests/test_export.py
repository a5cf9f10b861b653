"""pyairir.export_onnx / `pyairir export`: every backbone and paradigm, static and dynamic shapes,
run in ONNX Runtime and OpenVINO and equal to pyairir's fast model in float32."""

from __future__ import annotations

import warnings

import pytest
import torch

import pyairir
from pyairir.cli import main
from pyairir.export import OPSET, export_onnx, run_onnx, verify_onnx
from pyairir.paradigms import CPL, LUPI, SIPL
from tests.models.test_models import TINY
from tests.nn.test_frequency import module as frequency_module
from tests.paradigms.common import backbone

pytest.importorskip("onnxruntime")


def lupi() -> LUPI:
    model = LUPI(backbone("restormer"), prior_dim=16, estimator_width=4)
    model.begin_stage2()
    return model


MODELS = {
    **{name: (lambda name=name: pyairir.create_model(name, **TINY[name]), None) for name in TINY},
    "sipl": (lambda: SIPL(backbone("promptir"), train_size=32), 2),
    "cpl": (lambda: CPL(backbone("promptir")), None),
    "lupi": (lupi, None),
}


def perturbed_fast(build) -> torch.nn.Module:
    """The model on fused kernels, every parameter moved off its initial value (SIPL's
    dictionaries and LUPI's block convs start at zero, NAFNet's beta and gamma too)."""
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return pyairir.nn.set_fast(model).eval()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_runtime_equals_pyairir(tmp_path, name, dynamic):
    build, iterations = MODELS[name]
    model = perturbed_fast(build)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, size=(32, 32), dynamic=dynamic, iterations=iterations)
    engines = {check.engine for check in report.checks}
    assert "onnxruntime" in engines and path.is_file()
    assert len({check.shape for check in report.checks}) == (2 if dynamic else 1)
    assert all(check.relative_error <= 1e-4 for check in report.checks)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.restore(image, iterations=iterations)[-1] if iterations else model(image)
    got = run_onnx(path, "onnxruntime", image)()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4
    assert all(m.fast for m in model.modules() if isinstance(getattr(m, "fast", None), bool))  # model untouched


def test_a_wrong_file_fails_verification(tmp_path):
    path = tmp_path / "restormer.onnx"
    export_onnx(perturbed_fast(MODELS["restormer"][0]), path, size=(16, 16), verify=False)
    other = pyairir.create_model("restormer", **TINY["restormer"]).eval()
    with pytest.raises(RuntimeError, match="differs from pyairir by .* is not trustworthy"):
        verify_onnx(path, other, [(1, 3, 16, 16)])


def test_static_graph_refuses_other_sizes(tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(perturbed_fast(MODELS["restormer"][0]), path, size=(16, 16))
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_onnx(path, "onnxruntime", torch.rand(1, 3, 24, 24))()


@pytest.mark.parametrize("arguments, message", [
    (dict(size=(30, 32)), r"size must be two positive multiples of 8 for Restormer, got \(30, 32\)"),
    (dict(size=(0, 32)), "size must be two positive multiples of 8"),
    (dict(iterations=1), "iterations are SIPL's self-refinement; Restormer has none"),
])
def test_bad_arguments(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(pyairir.create_model("restormer", **TINY["restormer"]), tmp_path / "x.onnx", **arguments)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(pyairir.create_model("restormer", **TINY["restormer"]), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())  # nothing written


class Bands(torch.nn.Module):
    """A FreModule's band split alone: image -> (high, low) side by side along the channels."""

    def __init__(self, fre: torch.nn.Module) -> None:
        super().__init__()
        self.fre = fre

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.fre.bands(degraded), dim=1)


def test_adair_band_split_exports_with_dynamic_sizes(tmp_path):
    """AdaIR's band split traced at 64x64, where its low band is empty by construction (features under
    256 pixels), run by ONNX Runtime at sizes where it is not (the frequencies the rectangle can hold
    grow with the size): every size-dependent quantity is computed in the graph, not frozen."""
    fre = frequency_module().float().eval()
    path = tmp_path / "bands.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Bands(fre), (torch.rand(1, 3, 64, 64),), str(path), input_names=["degraded"],
                          output_names=["bands"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"degraded": axes, "bands": axes})
    for shape in [(2, 3, 300, 520), (1, 3, 256, 384), (1, 3, 64, 72)]:
        image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * torch.arange(1, shape[0] + 1)[
            :, None, None, None]
        with torch.no_grad():
            expected = Bands(fre)(image)
        low = expected[:, fre.para1.shape[0]:]
        assert (low.abs().amax() > 0) == (min(shape[2:]) >= 256)  # the low band is there from 256 pixels on
        got = run_onnx(path, "onnxruntime", image)()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_cli(tmp_path, capsys):
    assert main(["export", str(tmp_path / "demo.onnx"), "--size", "32", "48"]) == 0
    out = capsys.readouterr().out
    assert "exported" in out and "onnxruntime on 1x3x32x48" in out
    assert main(["export", str(tmp_path / "demo.onnx"), "--size", "30", "48"]) == 1
    assert "multiples of 16" in capsys.readouterr().err
