"""Eager PyTorch ground truth, one function per op, with the op's signature.

Imports only torch; readable over fast."""

from pyairir.reference.film_gelu import film_gelu
from pyairir.reference.gated_gelu import gated_gelu
from pyairir.reference.layer_norm_channels import layer_norm_channels
from pyairir.reference.mdta import mdta
from pyairir.reference.proxy_attention import proxy_attention
from pyairir.reference.topk_prompt import topk_prompt

__all__ = ["film_gelu", "gated_gelu", "layer_norm_channels", "mdta", "proxy_attention", "topk_prompt"]
