"""The output folder of a run: one run per folder, one process at a time, no checkpoint ever lost,
resumes that refuse what would mix two runs (issue 13, items 1-3 and 13)."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import pyairir.train.run_folder as run_folder
from pyairir.cli import main
from pyairir.data import ImageError
from pyairir.train import train
from pyairir.train.run_folder import RunFolderError, RunLock
from pyairir.train.trainer import Trainer, lr_factor
from tests.train.test_trainer import config


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_new_run_refuses_a_folder_holding_a_run_and_overwrite_moves_it_aside(tmp_path):
    c = config(tmp_path)
    train(c)
    run = Path(c.out)
    before = files(run)
    for extra in ("notes.txt", "plots"):  # 6 entries: the message names the first 5
        (run / extra).write_text("")
    before = files(run)
    with pytest.raises(RunFolderError) as error:
        train(c)
    assert str(error.value) == (f"output folder {c.out!r} already holds a run (checkpoint-3, checkpoint-6, config.json, "
                                "latest, notes.txt); pass --resume to continue it, --overwrite to move it aside and "
                                "start anew, or choose another out")
    assert files(run) == before  # nothing touched
    train(c, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and files(aside[0]) == before
    assert (run / "latest").read_text() == "checkpoint-6"
    with pytest.raises(ValueError) as both:
        train(c, resume=True, overwrite=True)
    assert str(both.value) == "train: resume and overwrite exclude each other (continue the run, or move it aside)"


def test_resume_says_when_there_is_nothing_to_resume(tmp_path, capsys):
    c = config(tmp_path, steps=3)
    train(c, resume=True)
    assert capsys.readouterr().out.splitlines()[0] == f"pyairir train: no checkpoint in {c.out}; starting from step 0"
    train(config(tmp_path, steps=6), resume=True)  # continues from checkpoint-3, silently
    assert "no checkpoint" not in capsys.readouterr().out


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "run").write_text("notes")
    with pytest.raises(RunFolderError, match="output folder .*run' is a file; out must name a folder"):
        train(config(tmp_path))
    assert (tmp_path / "run").read_text() == "notes"


def test_a_second_process_is_refused_while_the_folder_is_locked(tmp_path):
    c = config(tmp_path)
    lock = RunLock(Path(c.out))
    lock.acquire()  # another flock on the same file conflicts even within one process
    try:
        with pytest.raises(RunFolderError, match=rf"in use by another training process \(pid {os.getpid()}\)"):
            train(c, resume=True)
        assert not (Path(c.out) / "latest").exists()
    finally:
        lock.release()
    train(c, resume=True)  # free again


def test_temporary_names_are_unique_per_process_and_stale_ones_are_removed(tmp_path, monkeypatch, capsys):
    c = config(tmp_path, steps=3)
    run = Path(c.out)
    run.mkdir()
    (run / ".checkpoint-3.4242.tmp").mkdir()  # what a killed writer left
    (run / ".latest.abcd1234").write_text("checkpoint-")
    written = []
    real = run_folder.save_file
    monkeypatch.setattr(run_folder, "save_file", lambda tensors, path: (written.append(Path(path).parent.name),
                                                                         real(tensors, path)))
    train(c)
    assert written == [f".checkpoint-3.{os.getpid()}.tmp"]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoint-3", "config.json", "latest"]
    assert capsys.readouterr().out.splitlines()[0] == (f"pyairir train: cleaned up after a killed run in {c.out}: "
                                                       "removed .checkpoint-3.4242.tmp; removed .latest.abcd1234")


def test_a_kill_while_replacing_a_checkpoint_loses_nothing(tmp_path, monkeypatch, capsys):
    """The old checkpoint-6 is set aside, then the write dies before the new one is renamed into
    place: the next start puts the old one back, and --resume continues from it."""
    c = config(tmp_path)
    final = weights(train(c))
    run = Path(c.out)
    old = files(run / "checkpoint-6")
    trainer = Trainer(c)
    assert trainer.resume() and trainer.step == 6
    real = os.replace

    def dies_on_publishing(source, target):
        if Path(source).name.endswith(".tmp"):
            raise KeyboardInterrupt  # the kill
        real(source, target)

    monkeypatch.setattr(run_folder.os, "replace", dies_on_publishing)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert not (run / "checkpoint-6").exists()
    resumed = train(c, resume=True)
    assert "restored checkpoint-6 (set aside by a killed write)" in capsys.readouterr().out
    assert files(run / "checkpoint-6") == old
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in final.items())
    assert not any(p.name.startswith(".checkpoint") for p in run.iterdir())


def test_resume_passes_over_a_latest_naming_nothing(tmp_path, capsys):
    c = config(tmp_path)
    final = weights(train(c))
    run = Path(c.out)
    (run / "checkpoint-6").rename(run / "elsewhere")
    resumed = train(c, resume=True)
    out = capsys.readouterr().out
    assert "checkpoint-6' does not exist; resuming from" in out and "checkpoint-3', the newest complete" in out
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in final.items())


@pytest.mark.parametrize("damaged", ["model.safetensors", "state.pt", "config.json"])
def test_resume_passes_over_a_truncated_checkpoint(tmp_path, capsys, damaged):
    c = config(tmp_path)
    final = weights(train(c))
    path = Path(c.out) / "checkpoint-6" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = train(c, resume=True)
    assert f"skipped '{path}' cannot be read" in capsys.readouterr().out
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in final.items())


def test_resume_refuses_when_no_checkpoint_is_usable(tmp_path):
    c = config(tmp_path, steps=3)
    train(c)
    (Path(c.out) / "checkpoint-3" / "state.pt").write_bytes(b"")
    with pytest.raises(RunFolderError, match="no usable checkpoint .* --overwrite"):
        train(c, resume=True)


def test_resume_refuses_another_model_or_fewer_steps(tmp_path):
    c = config(tmp_path)
    train(c)
    folder = Path(c.out) / "checkpoint-6"
    other = config(tmp_path, model_args={**c.model_args, "width": 16})
    with pytest.raises(ValueError, match=r"cannot resume .*checkpoint-6' under another model: model_args was "
                                         r"\{.*'width': 8.*\}, the config says \{.*'width': 16"):
        train(other, resume=True)
    with pytest.raises(ValueError) as error:
        train(config(tmp_path, paradigm="pl", paradigm_args={"levels": ["latent"]}), resume=True)
    assert str(error.value) == (f"cannot resume {str(folder)!r} under another model: paradigm was 'none', the config "
                                "says 'pl'; paradigm_args was {}, the config says {'levels': ['latent']}; set them "
                                "back, or train into a new out folder")
    with pytest.raises(ValueError) as error:
        train(config(tmp_path, steps=4), resume=True)
    assert str(error.value) == (f"cannot resume {str(folder)!r}: it is at step 6, past steps=4; set steps above 6 "
                                "to train further")


def test_resume_refuses_weights_that_do_not_fit(tmp_path):
    """The same configuration, but weights that are not this model's (a file edited, or the model's code
    changed): one line saying so, not load_state_dict's page."""
    c = config(tmp_path)
    train(c)
    folder = Path(c.out) / "checkpoint-6"
    weights = load_file(folder / "model.safetensors")
    weights.pop("model.ending.bias")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError) as error:
        train(c, resume=True)
    assert str(error.value) == (f"cannot resume {str(folder)!r}: its weights do not fit this model: Error(s) in "
                                "loading state_dict for Plain:")


def test_resume_applies_and_records_a_changed_learning_rate(tmp_path):
    c = config(tmp_path, steps=3, checkpoint_every=3)
    train(c)
    longer = config(tmp_path, steps=6, lr=5e-4, checkpoint_every=3, betas=(0.8, 0.95), weight_decay=0.05)
    trainer = Trainer(longer)
    with pytest.warns(UserWarning, match=r"resumed checkpoint-3 at step 3 with changed settings: .*lr: 0.001 -> "
                                         r"0.0005; steps: 3 -> 6") as record:
        assert trainer.resume()
    if "mutmut" not in sys.modules:  # under mutation testing a trampoline frame sits in between
        assert record[0].filename == __file__  # the warning points at the caller of resume()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4 * lr_factor(3, longer))
    assert trainer.scheduler.get_last_lr() == [trainer.optimizer.param_groups[0]["lr"]]
    assert trainer.scheduler.base_lrs == [5e-4]
    assert trainer.optimizer.param_groups[0]["betas"] == (0.8, 0.95)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.05
    log = (Path(c.out) / "resume.log").read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d resumed checkpoint-3 at step 3 with changed settings: "
                        r"betas: \[0.9, 0.999\] -> \[0.8, 0.95\]; lr: 0.001 -> 0.0005; steps: 3 -> 6; "
                        r"weight_decay: 0.01 -> 0.05\n", log), log
    trainer.fit()
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(5e-4 * lr_factor(6, longer))


def test_the_command_line_takes_overrides_after_resume(tmp_path):
    c = config(tmp_path, steps=3, checkpoint_every=3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items()}))
    assert main(["train", str(path)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(path), "--resume", "steps=6"]) == 0
    assert (Path(c.out) / "latest").read_text() == "checkpoint-6"


def test_training_images_are_checked_before_the_first_step(tmp_path):
    c = config(tmp_path, patch_size=32)
    photos = Path(c.data)
    Image.new("RGB", (20, 40)).save(photos / "small.png")
    Image.new("RGBA", (64, 64)).save(photos / "alpha.png")
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError) as error:
        train(c)
    message = str(error.value)
    assert message.startswith("3 problem(s) with the 6 images:")
    assert "small.png' is 20x40, smaller than the 32x32 training patch" in message
    assert "alpha.png' has an alpha channel" in message and "broken.png' could not be read" in message
    assert not (Path(c.out) / "config.json").exists()
