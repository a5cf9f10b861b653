"""pyairir's registered ops (torch.ops.pyairir.*) and their Python entries.

Each entry checks its arguments, then runs the C++ kernel (CPU), the Triton
kernel (CUDA) or the eager reference, as pyairir.ops.backend decides."""

from pyairir.ops.backend import get_backend, use_backend
from pyairir.ops.film_gelu import film_gelu
from pyairir.ops.gated_gelu import gated_gelu
from pyairir.ops.layer_norm_channels import layer_norm_channels
from pyairir.ops.mdta import mdta
from pyairir.ops.proxy_attention import proxy_attention
from pyairir.ops.topk_prompt import topk_prompt

__all__ = ["film_gelu", "gated_gelu", "get_backend", "layer_norm_channels", "mdta", "proxy_attention", "topk_prompt",
           "use_backend"]
