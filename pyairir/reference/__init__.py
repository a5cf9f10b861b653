"""Eager PyTorch ground truth, one function per op, with the op's signature.

Imports only torch; readable over fast."""

from pyairir.reference.gated_gelu import gated_gelu
from pyairir.reference.layer_norm_channels import layer_norm_channels
from pyairir.reference.mdta import mdta

__all__ = ["gated_gelu", "layer_norm_channels", "mdta"]
