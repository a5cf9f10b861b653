"""Named configurations of the backbones: `create_model(name, **overrides)`."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from pyairir.models.adair import AdaIR
from pyairir.models.nafnet import NAFNet, NAFNetLocal
from pyairir.models.promptir import PromptIR
from pyairir.models.restormer import Restormer
from pyairir.nn import set_fast

_NAFNET_SIDD = {"middle_blk_num": 12, "enc_blk_nums": [2, 2, 4, 8], "dec_blk_nums": [2, 2, 2, 2]}
_NAFNET_GOPRO = {"middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28], "dec_blk_nums": [1, 1, 1, 1]}

# name -> (class, constructor arguments, where the configuration comes from)
CONFIGS: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {
    "restormer": (Restormer, {}, "restormer_arch.py defaults (deraining, motion/defocus deblurring)"),
    "restormer_biasfree": (Restormer, {"LayerNorm_type": "BiasFree"}, "Restormer Gaussian denoising options"),
    "promptir": (PromptIR, {"decoder": True}, "PromptIR train.py/test.py: PromptIR(decoder=True)"),
    "adair": (AdaIR, {"decoder": True}, "AdaIR train.py/test.py: AdaIR(decoder=True)"),
    "nafnet_sidd_w32": (NAFNet, {"width": 32, **_NAFNET_SIDD}, "NAFNet options/test/SIDD/NAFNet-width32.yml"),
    "nafnet_sidd_w64": (NAFNet, {"width": 64, **_NAFNET_SIDD}, "NAFNet options/test/SIDD/NAFNet-width64.yml"),
    "nafnet_gopro_w32": (NAFNetLocal, {"width": 32, **_NAFNET_GOPRO},
                         "NAFNet options/test/GoPro/NAFNet-width32.yml (NAFNetLocal)"),
    "nafnet_gopro_w64": (NAFNetLocal, {"width": 64, **_NAFNET_GOPRO},
                         "NAFNet options/test/GoPro/NAFNet-width64.yml (NAFNetLocal)"),
    "nafnet_demo": (NAFNet, {"width": 24, "middle_blk_num": 2, "enc_blk_nums": [1, 1, 1, 1],
                             "dec_blk_nums": [1, 1, 1, 1]},
                    "pyairir's demo model: a small NAFNet (3.6 M) trained here, see scripts/train_demo.py"),
}


def list_models() -> list[str]:
    """Names `create_model` accepts."""
    return sorted(CONFIGS)


def create_model(name: str, fast: bool = False, **overrides: Any) -> nn.Module:
    """Builds the named configuration, with any constructor argument overridden.

    e.g. create_model("promptir"), create_model("restormer", dim=16, num_blocks=[1, 1, 1, 1]).
    fast=True runs the fused kernels and keeps activations channels_last (pyairir.nn.set_fast);
    the parameters and state_dict are the same either way.
    """
    if name not in CONFIGS:
        raise ValueError(f"create_model: unknown model {name!r}; available: {', '.join(list_models())}")
    cls, arguments, _ = CONFIGS[name]
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [key for key in overrides if key not in accepted]
    if unknown and not takes_any:
        names = ", ".join(p for p in accepted if p != "self")
        raise TypeError(f"create_model({name!r}): {cls.__name__} has no argument {', '.join(unknown)}; "
                        f"it takes: {names}")
    model = cls(**{**arguments, **overrides})
    return set_fast(model) if fast else model
