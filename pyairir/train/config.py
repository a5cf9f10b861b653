"""Training configuration: a dataclass, presets from the papers, YAML files and key=value overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARADIGMS = ("none", "pl", "sipl", "lupi", "cpl")


@dataclass
class TrainConfig:
    # what to train
    model: str = "promptir"
    model_args: dict[str, Any] = field(default_factory=dict)
    fast: bool = False
    paradigm: str = "none"
    paradigm_args: dict[str, Any] = field(default_factory=dict)
    # data: a benchmark's training folder (data/Train, CDD-11_train), or a folder of clean
    # images with synthetic degradations (benchmark "synthetic")
    data: str = "data/Train"
    benchmark: str = "3task"
    synthetic_kinds: tuple[str, ...] = ("noise", "rain", "haze", "low_light", "blur")
    patch_size: int = 128
    batch_size: int = 8  # global, split evenly over the processes
    num_workers: int = 0
    cache_images: bool = False  # keep the decoded training images in memory (each worker its own copy)
    # optimisation (AdamW, linear warmup then cosine to min_lr)
    steps: int = 10_000
    lr: float = 2e-4
    min_lr: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = None
    bf16: bool = False
    seed: int = 0
    # paradigms
    lupi_stage2_at: int | None = None  # step at which LUPI's stage 2 starts (default: steps // 2)
    cpl_vgg: str | None = None  # VGG16 state_dict file for CPL's CPR term
    # output
    out: str = "runs/train"
    checkpoint_every: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        errors = _check_fields(self)
        if errors:
            raise ValueError("TrainConfig: " + ("; ".join(errors) if len(errors) == 1 else
                                                 f"{len(errors)} bad settings:\n  " + "\n  ".join(errors)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # steps=1e4
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# field -> (converter, what it must be, range check or None, what the range is)
_RULES: dict[str, tuple[Any, str, Any, str]] = {
    "model": (lambda v: v if isinstance(v, str) else None, "a model name", None, ""),
    "model_args": (lambda v: v if isinstance(v, dict) else None, "a mapping", None, ""),
    "fast": (_as_bool, "true or false", None, ""),
    "paradigm": (lambda v: v if isinstance(v, str) else None, "a string", lambda v: v in PARADIGMS,
                 "one of " + ", ".join(PARADIGMS)),
    "paradigm_args": (lambda v: v if isinstance(v, dict) else None, "a mapping", None, ""),
    "data": (lambda v: v if isinstance(v, str) else None, "a folder path", None, ""),
    "benchmark": (lambda v: v if isinstance(v, str) else None, "a string", None, ""),
    "synthetic_kinds": (lambda v: tuple(v) if isinstance(v, (list, tuple)) and all(isinstance(k, str) for k in v)
                        and v else None, "a non-empty list of degradation names", None, ""),
    "patch_size": (_as_int, "an integer", lambda v: v > 0, "positive"),
    "batch_size": (_as_int, "an integer", lambda v: v > 0, "positive"),
    "num_workers": (_as_int, "an integer", lambda v: v >= 0, "0 or more"),
    "cache_images": (_as_bool, "true or false", None, ""),
    "steps": (_as_int, "an integer", lambda v: v > 0, "positive"),
    "lr": (_as_float, "a finite number", lambda v: v > 0, "positive"),
    "min_lr": (_as_float, "a finite number", lambda v: v >= 0, "0 or more"),
    "weight_decay": (_as_float, "a finite number", lambda v: v >= 0, "0 or more"),
    "betas": (lambda v: tuple(float(b) for b in v) if isinstance(v, (list, tuple)) and len(v) == 2
              and all(_as_float(b) is not None for b in v) else None, "two numbers",
              lambda v: all(0 <= b < 1 for b in v), "two numbers each in [0, 1)"),
    "warmup_steps": (_as_int, "an integer", lambda v: v >= 0, "0 or more"),
    "grad_clip": (lambda v: None if v is None else _as_float(v), "null or a finite number",
                  lambda v: v is None or v > 0, "positive (null turns clipping off)"),
    "bf16": (_as_bool, "true or false", None, ""),
    "seed": (_as_int, "an integer", lambda v: v >= 0, "0 or more"),
    "lupi_stage2_at": (lambda v: None if v is None else _as_int(v), "null or an integer",
                       lambda v: v is None or v >= 0, "0 or more"),
    "cpl_vgg": (lambda v: v if v is None or isinstance(v, str) else None, "null or a file path", None, ""),
    "out": (lambda v: v if isinstance(v, str) and v else None, "a folder path", None, ""),
    "checkpoint_every": (_as_int, "an integer", lambda v: v > 0, "positive"),
    "progress": (_as_bool, "true or false", None, ""),
}
_NULLABLE = {"grad_clip", "lupi_stage2_at", "cpl_vgg"}


def _check_fields(config: TrainConfig) -> list[str]:
    """Converts each field to its type in place (the string "false" from the command line to
    False, 1e4 to 10000) and returns one message per field that is of the wrong type or range."""
    errors = []
    for name, (convert, kind, in_range, range_text) in _RULES.items():
        value = getattr(config, name)
        converted = convert(value)
        if converted is None and not (value is None and name in _NULLABLE):
            errors.append(f"{name} must be {kind}, got {value!r}")
            continue
        if in_range is not None and not in_range(converted):
            errors.append(f"{name} must be {range_text}, got {value!r}")
            continue
        setattr(config, name, converted)
    if not errors and config.min_lr > config.lr:
        errors.append(f"min_lr must not exceed lr ({config.lr}), got {config.min_lr}")
    if not errors and config.warmup_steps > config.steps:
        errors.append(f"warmup_steps must not exceed steps ({config.steps}), got {config.warmup_steps}")
    if not errors and config.lupi_stage2_at is not None and config.lupi_stage2_at > config.steps:
        errors.append(f"lupi_stage2_at must not exceed steps ({config.steps}), got {config.lupi_stage2_at}")
    return errors


# The papers' settings, scaled to steps (their epochs depend on the dataset size).
PRESETS: dict[str, dict[str, Any]] = {
    # PromptIR train.py: AdamW(lr 2e-4) (torch defaults betas, wd 0.01), L1, batch 8 x 4 GPUs,
    # 128 crops, linear warmup 15 of 150 epochs then cosine to 0.
    "promptir": dict(model="promptir", lr=2e-4, weight_decay=0.01, betas=(0.9, 0.999), batch_size=32,
                     patch_size=128, warmup_fraction=0.1),
    # AdaIR train.py/options.py: the same as PromptIR (AdamW lr 2e-4, L1, batch 8 x 4 GPUs, 128 crops,
    # 15 warmup epochs of 150); its cosine runs over 180 epochs, so it stops at 8 % of lr where
    # this one reaches min_lr 0 at `steps`.
    "adair": dict(model="adair", lr=2e-4, weight_decay=0.01, betas=(0.9, 0.999), batch_size=32, patch_size=128,
                  warmup_fraction=0.1),
    # Restormer options: AdamW lr 3e-4, wd 1e-4, cosine to 1e-6, gradient clipping at 0.01.
    "restormer": dict(model="restormer", lr=3e-4, min_lr=1e-6, weight_decay=1e-4, betas=(0.9, 0.999),
                      grad_clip=0.01, batch_size=8, patch_size=128),
    # NAFNet SIDD options: AdamW lr 1e-3, betas (0.9, 0.9), wd 0, cosine to 1e-7, clipping 0.01.
    "nafnet": dict(model="nafnet_sidd_w32", lr=1e-3, min_lr=1e-7, weight_decay=0.0, betas=(0.9, 0.9),
                   grad_clip=0.01, batch_size=32, patch_size=256),
}


def from_preset(name: str, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a paper's preset (promptir, adair, restormer, nafnet), with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    settings = {**PRESETS[name], **overrides}
    fraction = settings.pop("warmup_fraction", 0.0)
    config = TrainConfig(**settings)
    if "warmup_steps" not in overrides:
        config.warmup_steps = int(fraction * config.steps)
    return config


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML file (which may name a `preset`), then `key=value` overrides
    (values parsed as JSON when they can be: steps=100, betas=[0.9,0.9], model_args={"dim":8})."""
    settings: dict[str, Any] = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {str(path)!r} does not exist")
        try:
            settings = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"training config {str(path)!r} is not valid YAML: {error}") from None
        if not isinstance(settings, dict):
            raise ValueError(f"training config {str(path)!r} must be a mapping of settings, got {type(settings).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        settings[key.strip()] = _parse_value(value)
    known = {f.name for f in dataclasses.fields(TrainConfig)} | {"preset"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown training settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    preset = settings.pop("preset", None)
    return from_preset(preset, **settings) if preset else TrainConfig(**settings)
