"""Loading official and pyairir checkpoints into a model, weights only.

Formats: BasicSR `.pth` ({'params': state_dict}, or 'params_ema'), PyTorch
Lightning `.ckpt` ({'state_dict': ...}, keys prefixed by the LightningModule
attribute, `net.` for PromptIR), a plain state_dict, and `.safetensors`.
Wrapper prefixes (`module.` from DDP, `_orig_mod.` from torch.compile) are
stripped; a model class may add its own key mapping as a static method
`checkpoint_filter(state_dict) -> state_dict` (timm's checkpoint_filter_fn).
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import torch
from torch import nn

STATE_DICT_KEYS = ("params", "params_ema", "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5  # keys listed per kind of mismatch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, on the CPU, as they are stored (no key mapping)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist or is not a file")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # what weights_only=True refuses (it raises nothing else of this type)
        raise CheckpointError(
            f"checkpoint {path!r} holds Python objects other than tensors and plain containers; pyairir only "
            f"loads weights (torch.load(weights_only=True)). Re-save its state_dict. ({str(error).splitlines()[0]})"
        ) from None
    except Exception as error:  # a corrupt file fails anywhere in the unpickler, with any exception type
        raise CheckpointError(f"checkpoint {path!r} is not a readable PyTorch file (corrupt or truncated?): "
                              f"{type(error).__name__}: {error}") from None
    return _state_dict_of(content, path, key)


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path!r} is not a readable safetensors file: {error}") from None


def _state_dict_of(content: Any, path: str, key: str | None) -> dict[str, torch.Tensor]:
    if not isinstance(content, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(content).__name__}, expected a dict of tensors")
    if key is not None:
        if key not in content:
            raise CheckpointError(f"checkpoint {path!r} has no entry {key!r}; it has: {_listing(content)}")
        content = content[key]
    elif not _is_state_dict(content):
        found = next((k for k in STATE_DICT_KEYS if k in content and _is_state_dict(content[k])), None)
        if found is None:
            raise CheckpointError(
                f"checkpoint {path!r} is neither a state_dict nor holds one under "
                f"{', '.join(map(repr, STATE_DICT_KEYS))}; it has: {_listing(content)}"
            )
        content = content[found]
    if not _is_state_dict(content):
        raise CheckpointError(f"checkpoint {path!r}: entry {key!r} is not a dict of tensors")
    return content


def _is_state_dict(content: Any) -> bool:
    return isinstance(content, dict) and len(content) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items())


def _listing(content: dict) -> str:
    keys = list(content)
    return ", ".join(map(repr, keys[:SHOWN])) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _strip_prefixes(state_dict: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict) and not any(k.startswith(prefix) for k in model_keys):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def load_checkpoint(model: nn.Module, path: str | os.PathLike, key: str | None = None,
                    strict: bool = True) -> nn.Module:
    """Loads the weights stored at `path` into `model` and returns the model.

    key: the entry holding the state_dict (default: the first of 'params', 'params_ema',
    'state_dict', 'model' present, or the file itself if it is a state_dict).
    strict: every model key must be in the checkpoint and vice versa (otherwise missing
    and unexpected keys are reported in a warning); shapes must always match, and a floating
    parameter is never loaded from an integer tensor. Warns on NaN or infinite weights.
    Raises CheckpointError naming the missing/unexpected keys, differing shapes and integer tensors.
    """
    state_dict = read_state_dict(path, key)
    model_state = model.state_dict()
    state_dict = _strip_prefixes(state_dict, set(model_state))
    model_filter = getattr(type(model), "checkpoint_filter", None)
    if model_filter is not None:
        state_dict = model_filter(state_dict)
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [(k, tuple(v.shape), tuple(model_state[k].shape))
                  for k, v in state_dict.items() if k in model_state and v.shape != model_state[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:SHOWN])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:SHOWN])}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(
            f"{k} is {list(ckpt)} in the checkpoint, {list(own)} in the model" for k, ckpt, own in mismatched[:SHOWN]))
    integral = [(k, v.dtype, model_state[k].dtype) for k, v in state_dict.items()
                if k in model_state and model_state[k].is_floating_point() and not v.is_floating_point()]
    if integral:
        problems.append(f"{len(integral)} integer tensor(s) for floating parameters: " + "; ".join(
            f"{k} is {ckpt} in the checkpoint, {own} in the model" for k, ckpt, own in integral[:SHOWN]))
    name = type(model).__name__
    if mismatched or integral or (strict and problems):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not fit {name}: " + "; ".join(problems))
    if problems:
        warnings.warn(f"checkpoint {os.fspath(path)!r} loaded into {name} non-strictly: " + "; ".join(problems),
                      stacklevel=2)
    non_finite = [k for k, v in state_dict.items()
                  if k in model_state and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        warnings.warn(f"checkpoint {os.fspath(path)!r} holds NaN or infinite values in {len(non_finite)} tensor(s): "
                      f"{', '.join(non_finite[:SHOWN])}; the model's outputs will not be finite", stacklevel=2)
    model.load_state_dict(state_dict, strict=strict)
    return model
