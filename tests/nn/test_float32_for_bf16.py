"""pyairir.runtime.float32_for_bf16: on a CPU without bf16 arithmetic (or when set), a fast bf16
model computes its layers in float32 from bf16 inputs and weights and hands bf16 from layer to
layer: no convolution or matrix product sees a bf16 operand, every block (Transformer, NAF) returns bf16,
and the output is as close to the float32 model as the bf16 path that computes in bf16."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import pyairir
from benchmarks.machine import cpu_flags
from pyairir import runtime
from pyairir.nn import NAFBlock, TransformerBlock
from pyairir.nn.fast import compute_dtype
from tests.models.test_models import TINY

PRODUCTS = {"aten.convolution", "mkldnn._convolution_pointwise", "aten.mm", "aten.bmm", "aten.addmm",
            "pyairir.mdta", "pyairir.gated_gelu", "pyairir.proxy_attention", "pyairir.topk_prompt",
            "pyairir.film_gelu"}


@pytest.fixture
def setting():
    """runtime.set_float32_for_bf16, put back to the CPU's choice afterwards."""
    yield runtime.set_float32_for_bf16
    runtime.set_float32_for_bf16(None)


class ProductDtypes(TorchDispatchMode):
    """The dtypes of the tensor operands of every convolution, matrix product and fused op (`dtypes`),
    and the ops that saw a bf16 operand (`bf16`)."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()
        self.bf16: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in PRODUCTS:
            dtypes = {t.dtype for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            self.dtypes |= dtypes
            self.bf16 |= {name} if torch.bfloat16 in dtypes else set()
        return func(*args, **(kwargs or {}))


def test_default_follows_the_cpu():
    """bf16_arithmetic() agrees with the kernel's flags (x86 Linux), and the default follows it."""
    flags = cpu_flags()
    if not flags or not sys.platform.startswith("linux"):
        pytest.skip("needs /proc/cpuinfo with x86 flags")
    assert runtime.bf16_arithmetic() == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert runtime.float32_for_bf16() == (not runtime.bf16_arithmetic())


def test_setting(setting):
    setting(True)
    assert runtime.float32_for_bf16()
    setting(False)
    assert not runtime.float32_for_bf16()
    with pytest.raises(ValueError, match=r"set_float32_for_bf16: enabled must be True, False or None, got 1"):
        setting(1)


def test_compute_dtype(setting):
    x = torch.zeros(1, 2, 3, 3, dtype=torch.bfloat16)
    setting(True)
    with torch.no_grad():
        assert compute_dtype(True, x) == torch.float32
        assert compute_dtype(False, x) == torch.bfloat16  # the eager (reference) path is left alone
        assert compute_dtype(True, x.float()) == torch.float32
        assert compute_dtype(True, x.half()) == torch.float16
    assert compute_dtype(True, x) == torch.bfloat16  # autograd on: training keeps its dtype
    setting(False)
    with torch.no_grad():
        assert compute_dtype(True, x) == torch.bfloat16


def run_bf16(name: str):
    """(fp32 output, bf16 output, product operand dtypes, dtypes the blocks returned)."""
    torch.manual_seed(0)
    model = pyairir.create_model(name, fast=True, **TINY[name]).eval()
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        pyairir.nn.set_fast(model.bfloat16())
        returned = set()
        hooks = [m.register_forward_hook(lambda _, __, out: returned.add(out.dtype))
                 for m in model.modules() if isinstance(m, (TransformerBlock, NAFBlock))]
        with ProductDtypes() as products:
            out = model(x.bfloat16())
        for hook in hooks:
            hook.remove()
    return reference, out, products.dtypes, returned


@pytest.mark.parametrize("name", ["restormer", "promptir", "adair", "nafnet_sidd_w32", "nafnet_gopro_w32"])
def test_fast_bf16_model_computes_in_float32(name, setting):
    setting(True)
    reference, out, products, returned = run_bf16(name)
    assert out.dtype == torch.bfloat16 and returned == {torch.bfloat16}
    assert torch.bfloat16 not in products, products
    setting(False)  # the same model computing in bf16: the products do see bf16 operands
    _, in_bf16, products, _ = run_bf16(name)
    assert torch.bfloat16 in products
    error, error_in_bf16 = ((o.float() - reference).abs().max().item() for o in (out, in_bf16))
    ulp = reference.abs().max().item() * 2 ** -8
    assert error <= 2 * error_in_bf16 + ulp, (error, error_in_bf16)


@pytest.mark.parametrize("paradigm", ["sipl", "cpl", "lupi"])
def test_paradigm_layers_compute_in_float32(paradigm, setting):
    """SIPL's Proxy Fusion, CPL's sparse prompts and LUPI's Degradation-aware Blocks on a fast bf16
    PromptIR: their products see no bf16 operand (LUPI's degradation predictor, a small CNN on the
    image, and the FiLM MLPs on the prior vector still compute in bf16), the output is bf16."""
    from tests.paradigms.common import batch
    from tests.paradigms.test_fast import build

    torch.manual_seed(0)
    model = pyairir.nn.set_fast(build(paradigm).eval().bfloat16())
    degraded = batch(size=24)[0].bfloat16()
    setting(True)
    with torch.no_grad(), ProductDtypes() as products:
        out = model(degraded)
    assert out.dtype == torch.bfloat16
    if paradigm == "lupi":
        assert "pyairir.film_gelu" not in products.bf16 and "pyairir.mdta" not in products.bf16, products.bf16
    else:
        assert not products.bf16, products.bf16
    setting(False)
    with torch.no_grad(), ProductDtypes() as products:
        model(degraded)
    assert {"pyairir.film_gelu" if paradigm == "lupi" else "pyairir.mdta"} <= products.bf16
