"""pyairir: fast, trustworthy all-in-one image restoration for PyTorch.

    import pyairir
    model = pyairir.create_model("promptir")
    pyairir.load_checkpoint(model, "model.ckpt")
    restored = pyairir.eval.restore(model, image)

    pyairir.accelerate(official_model)   # fused kernels in a model built from the official code
    pyairir.export_onnx(model, "model.onnx")   # ONNX, checked in ONNX Runtime
"""

__version__ = "0.1.0"

import os as _os

# Large CPU tensors on transparent huge pages (pyairir.runtime): PyTorch reads this when it allocates
# its first CPU tensor, so it takes effect when pyairir is imported before any tensor is made.
# THP_MEM_ALLOC_ENABLE=0 in the environment keeps it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from pyairir import eval, models, nn, ops, paradigms, reference, runtime  # noqa: E402,A004
from pyairir.accelerate import AccelerateReport, accelerate  # noqa: E402
from pyairir.export import ExportReport, export_onnx  # noqa: E402
from pyairir.models import CheckpointError, create_model, list_models, load_checkpoint  # noqa: E402

__all__ = ["AccelerateReport", "CheckpointError", "ExportReport", "accelerate", "create_model", "eval",
           "export_onnx", "list_models", "load_checkpoint", "models", "nn", "ops", "paradigms", "reference", "runtime",
           "__version__"]
