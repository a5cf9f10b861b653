"""Modules, one per paper concept. Parameter names and shapes follow the official code."""

from pyairir.nn.degradation import DegradationAwareBlock, DegradationPredictor, PrivilegedEstimator
from pyairir.nn.fast import set_fast
from pyairir.nn.frequency import ChannelGate, Chanel_Cross_Attention, FreModule, FreRefine, SpatialGate
from pyairir.nn.gdfn import GDFN, FeedForward
from pyairir.nn.layer_norm import BiasFreeLayerNorm, LayerNorm, LayerNorm2d, WithBiasLayerNorm
from pyairir.nn.local_avg_pool import LocalAvgPool2d
from pyairir.nn.mdta import MDTA, Attention
from pyairir.nn.nafblock import NAFBlock, SimpleGate
from pyairir.nn.prompt import PromptGenBlock
from pyairir.nn.proxy_fusion import CrossAttention, DualGateFeedForward, ProxyFusionBlock
from pyairir.nn.resampling import Downsample, OverlapPatchEmbed, Upsample
from pyairir.nn.sparse_prompt import SparsePromptModule
from pyairir.nn.transformer_block import TransformerBlock

__all__ = [
    "Attention", "BiasFreeLayerNorm", "Chanel_Cross_Attention", "ChannelGate", "CrossAttention",
    "DegradationAwareBlock", "DegradationPredictor", "Downsample", "DualGateFeedForward", "FeedForward", "FreModule",
    "FreRefine", "GDFN", "LayerNorm", "LayerNorm2d", "LocalAvgPool2d", "MDTA", "NAFBlock", "OverlapPatchEmbed",
    "PrivilegedEstimator", "PromptGenBlock", "ProxyFusionBlock", "SimpleGate", "SparsePromptModule", "SpatialGate",
    "TransformerBlock", "Upsample", "WithBiasLayerNorm", "set_fast",
]
