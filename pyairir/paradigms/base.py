"""What every paradigm shares: it wraps a backbone that implements the hook protocol
(pyairir.models.protocol) and presents the backbone's parameters under the backbone's own key
names, so that a paradigm's state_dict has the flat layout of the official code (e.g. SIPL's
PromptIR_ProxyFusion, CPLIR's SparsePromptIR) and official checkpoints load strictly."""

from __future__ import annotations

import torch
from torch import nn

from pyairir.models.protocol import Backbone

PREFIX = "backbone."


class Paradigm(nn.Module):
    """Holds `backbone`; state_dict keys of the backbone appear without the `backbone.` prefix.

    Modules the backbone lists in `unused_modules` (PromptIR's six dead convs) are removed:
    the official paradigm models do not have them.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = self.adopt(backbone)
        self.register_state_dict_post_hook(_flatten_backbone_keys)
        self.register_load_state_dict_pre_hook(_nest_backbone_keys)

    def adopt(self, backbone: nn.Module) -> nn.Module:
        """backbone, checked to implement the hook protocol, without its unused modules."""
        if not isinstance(backbone, Backbone):
            raise TypeError(f"{type(self).__name__}: the backbone must implement pyairir's hook protocol "
                            f"(encode/decode, level_channels, stage_channels), got {type(backbone).__name__}; "
                            "use a model from pyairir.create_model")
        for name in getattr(backbone, "unused_modules", ()):
            if hasattr(backbone, name):
                delattr(backbone, name)
        return backbone

    @property
    def size_multiple(self) -> int:
        return self.backbone.size_multiple

    def deepest_stages(self, count: int) -> tuple[str, ...]:
        """The `count` deepest decoder stages of the backbone, deepest first."""
        return tuple(self.backbone.stage_channels())[:count]

    def stage_scale(self, stage: str) -> int:
        """How many times smaller than the input a stage's features are."""
        levels = [name for name in self.backbone.level_channels() if name.startswith("level")]
        return 2 ** len(levels) if stage == "latent" else 2 ** (int(stage.removeprefix("level")) - 1)


def _own_names(module: nn.Module) -> set[str]:
    return {name for name, _ in module.named_children() if name != "backbone"} | set(module._parameters) | set(
        module._buffers)


def _flatten_backbone_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key.startswith(prefix + PREFIX):
            key = prefix + key[len(prefix + PREFIX):]
        state_dict[key] = value


def _nest_backbone_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                        missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    own = _own_names(module)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        first = key[len(prefix):].split(".", 1)[0]
        if first not in own and not key.startswith(prefix + PREFIX):
            state_dict[prefix + PREFIX + key[len(prefix):]] = state_dict.pop(key)


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean()
