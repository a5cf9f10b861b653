"""benchmarks/learning.py, the small-scale replication of the papers' claims: its statistics on
hand-computed cases, its gradient check on a parameter that gets none, and the --quick run
end to end (every variant trains, is evaluated and reported; a second run resumes)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch

import pyairir
from benchmarks import learning


def test_mutual_information_by_hand():
    tasks = ["rain", "rain", "haze", "haze"]
    assert learning.mutual_information(tasks, [0, 0, 1, 1]) == pytest.approx(1.0)  # the prompt names the task
    assert learning.mutual_information(tasks, [0, 1, 0, 1]) == pytest.approx(0.0)  # independent
    # I = H(prompt) - H(prompt | task) = H(3/4, 1/4) - (1/2) H(1/2, 1/2) = 0.8113 - 0.5
    assert learning.mutual_information(tasks, [0, 0, 0, 1]) == pytest.approx(0.8112781 - 0.5, rel=1e-6)


def test_paired_interval_by_hand():
    mean, low, high = learning.paired([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)  # t(0.975, 2) s / sqrt(n)
    assert (mean, low, high) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half))
    assert learning.mean_sd([2.0, 4.0]) == pytest.approx((3.0, math.sqrt(2)))


def test_sipl_guidance_is_also_measured_at_the_training_crop_size():
    torch.manual_seed(0)
    model = pyairir.paradigms.SIPL(pyairir.create_model("promptir", **learning.QUICK.model_args), train_size=16).eval()
    settings = dataclasses.replace(learning.QUICK, patch_size=16, eval_size=24)  # the photos' crop differs
    measured = learning.guidance_at_training_size(model, settings)
    samples = learning.held_out(dataclasses.replace(settings, eval_size=16))
    with torch.no_grad():
        unguided, guided = model.restore(torch.stack([s["degraded"] for s in samples]),
                                         guide=torch.stack([s["clean"] for s in samples]))
    assert measured == {"size": 16, "unguided": learning.scores(list(unguided), samples)["average"]["psnr"],
                        "guided": learning.scores(list(guided), samples)["average"]["psnr"]}


def test_gradient_check_names_a_parameter_without_gradient(tmp_path):
    c = learning.config("promptir", "plain", 0, learning.QUICK, tmp_path, quick=True)
    learning.prepare_photos(tmp_path)
    torch.manual_seed(0)
    model = pyairir.create_model("promptir", **learning.QUICK.model_args)
    assert learning.gradient_coverage(model, c, batches=1) == []  # PromptIR's declared dead convs left out
    class Detached(torch.nn.Module):  # a misplaced detach on the output conv's weight
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight.detach()

    torch.nn.utils.parametrize.register_parametrization(model.output, "weight", Detached())
    assert learning.gradient_coverage(model, c, batches=1, more=2) == ["output.parametrizations.weight.original"]


def test_runs_are_reused_when_only_seeds_were_added():
    stored = json.loads(json.dumps(dataclasses.asdict(learning.FULL)))
    del stored["extra_seeds"]  # a settings.json written before the field existed
    assert learning.reusable(stored, learning.FULL)
    assert not learning.reusable(stored, dataclasses.replace(learning.FULL, lr=2e-3))
    assert not learning.reusable(stored, dataclasses.replace(learning.FULL, seeds=(0, 1)))  # a seed dropped
    assert not learning.reusable({**stored, "extra_seeds": [5]}, learning.FULL)


def test_vs_plain_pairs_the_seeds_both_variants_have():
    def run(seed: int, psnr: float) -> dict:
        return {"seed": seed, "scores": {"average": {"psnr": psnr}}}

    plain = [run(0, 10.0), run(1, 20.0), run(2, 30.0), run(3, 40.0)]
    assert learning._vs_plain([run(2, 31.0), run(0, 12.0)], plain, "average") == learning.paired([31.0, 12.0],
                                                                                             [30.0, 10.0])


def test_quick_run_trains_evaluates_and_reports_every_variant(tmp_path, monkeypatch):
    # First without the extra seeds, then with them: the second call trains only plain's and SIPL's extra runs.
    with monkeypatch.context() as m:
        m.setattr(learning, "QUICK", dataclasses.replace(learning.QUICK, extra_seeds=()))
        assert learning.main(["--quick", "--out", str(tmp_path)]) == 0
    assert learning.main(["--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["backbones"]) == list(learning.BACKBONES) == ["promptir", "adair"]
    report = (tmp_path / "learning.md").read_text()
    for backbone, name in learning.NAMES.items():
        variants = summary["backbones"][backbone]["variants"]
        assert list(variants) == list(learning.VARIANTS)
        for variant, entry in variants.items():
            assert set(entry["tasks"]) == {*learning.TASKS, "average"}
            assert all(3 < t["psnr"][0] < 40 and 0 < t["ssim"][0] < 1 for t in entry["tasks"].values())  # not NaN
            # CPL's gates too (renormalize=True fails). AdaIR's frequency branch is left to the full run: at
            # dim 8 after 4 steps its ChannelGate (a C -> C/16 ReLU MLP) can be dead, a gradient truly 0.
            missing = [n for n in entry["no_gradient"] if not (backbone == "adair" and re.search(r"(^|\.)fre\d\.", n))]
            assert missing == [], (backbone, variant)
        assert len(variants["sipl"]["refinement"]) == learning.REFINEMENTS + 1
        at_training_size = variants["sipl"]["training_size"]
        assert at_training_size["size"] == learning.QUICK.patch_size
        assert all(3 < at_training_size[k][0] < 40 for k in ("unguided", "guided"))
        assert f"cropped to the training crop size ({learning.QUICK.patch_size} x {learning.QUICK.patch_size}" in report
        # Measured from the run's true start: a few steps move a dictionary a little; another draw of the
        # initial weights (initial_model not seeded as the trainer is) would be ~sqrt(2) = 141 % away.
        changes = variants["sipl"]["dictionary_change"]
        assert len(changes) == 3 and all(0 < c["from_init"][0] < 0.5 for c in changes.values()), changes
        assert set(variants["lupi"]["lupi"]) == {"stage 1", "stage 2"}
        assert len(variants["cpl"]["prompts"]) == 3 and len(variants["cpl_cpr"]["prompts"]) == 3
        assert f"## {name}: mechanism checks" in report and f"(learning/{backbone}_sipl_refinement.png)" in report
        assert (tmp_path / "learning" / f"{backbone}_cpl_prompts.png").is_file()
    results = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert results == sorted([f"{b}-{v}-seed{s}.json" for b in learning.BACKBONES for v in learning.VARIANTS
                              for s in learning.QUICK.seeds]
                             + [f"{b}-{v}-seed{s}.json" for b in learning.BACKBONES for v in learning.EXTRA_SEED_VARIANTS
                                for s in learning.QUICK.extra_seeds])
    seeds = {v: sorted(map(int, e["average_per_seed"])) for v, e in summary["backbones"]["promptir"]["variants"].items()}
    assert seeds["sipl"] == seeds["plain"] == [0, 1, 2] and seeds["cpl"] == [0, 1]
    assert "| PromptIR + CPL sparse prompts (no CPR) | " in report and " | — |" in report  # seed 2: not run
    before = (tmp_path / "summary.json").read_text()
    assert learning.main(["--quick", "--out", str(tmp_path)]) == 0  # resumes: nothing trained again
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(before)
