"""Every training setting is parsed to its type and range-checked, with one message per bad field
(issue 13, item 5)."""

from __future__ import annotations

import pytest

from pyairir.train import TrainConfig, load_config


def test_command_line_strings_become_the_fields_types():
    c = load_config(None, ["fast=False", "progress=false", "bf16=False", "steps=1e1", "grad_clip=null",
                           "lr=0.5", "betas=[0.9, 0.99]"])
    assert c.fast is False and c.progress is False and c.bf16 is False
    assert c.steps == 10 and type(c.steps) is int
    assert c.grad_clip is None and c.lr == 0.5 and c.betas == (0.9, 0.99)
    assert '"fast": false' in c.to_json()
    assert load_config(None, ["fast=true"]).fast is True


@pytest.mark.parametrize("override, message", [
    ("lr=fast", "lr must be a finite number, got 'fast'"),
    ("grad_clip=-1", "grad_clip must be positive (null turns clipping off), got -1"),
    ("steps=1.5", "steps must be an integer, got 1.5"),
    ("steps=0", "steps must be positive, got 0"),
    ("bf16=maybe", "bf16 must be true or false, got 'maybe'"),
    ("betas=[0.9, 1.0]", "betas must be two numbers each in [0, 1), got [0.9, 1.0]"),
    ("betas=[0.9]", "betas must be two numbers, got [0.9]"),
    ("min_lr=1", "min_lr must not exceed lr (0.0002), got 1.0"),
    ("warmup_steps=20000", "warmup_steps must not exceed steps (10000), got 20000"),
    ("lupi_stage2_at=20000", "lupi_stage2_at must not exceed steps (10000), got 20000"),
    ("num_workers=-1", "num_workers must be 0 or more, got -1"),
    ("model_args=3", "model_args must be a mapping, got 3"),
    ("synthetic_kinds=[]", "synthetic_kinds must be a non-empty list of degradation names, got []"),
    ("paradigm=dpo", "paradigm must be one of none, pl, sipl, lupi, cpl, got 'dpo'"),
    ("lr=NaN", "lr must be a finite number, got nan"),
])
def test_each_bad_field_gets_one_clear_message(override, message):
    with pytest.raises(ValueError) as error:
        load_config(None, [override])
    assert str(error.value) == f"TrainConfig: {message}"


def test_every_bad_field_is_listed_at_once():
    with pytest.raises(ValueError) as error:
        TrainConfig(steps="many", lr=-1, fast="perhaps")
    assert str(error.value) == ("TrainConfig: 3 bad settings:\n  fast must be true or false, got 'perhaps'\n"
                                "  steps must be an integer, got 'many'\n  lr must be positive, got -1")
