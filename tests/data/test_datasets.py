"""Every reader on a tiny tree of the official layouts; determinism; clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from pyairir.data import BENCHMARKS, evaluation_sets, read_image, synthetic_set, training_set
from pyairir.data.datasets import REPEATS, dihedral
from tests.data.tree import make_cdd11_tree, make_test_tree, make_training_tree


@pytest.mark.parametrize("suite", ["3task", "5task"])
def test_training_sets(tmp_path, suite):
    root = make_training_tree(tmp_path)
    dataset = training_set(root, suite, patch_size=16, seed=0)
    tasks = [e.task for e in dataset.entries]
    for task in BENCHMARKS[suite]:
        family = task.split("_")[0]
        assert tasks.count(task) == 2 * REPEATS[family], task
    sample = dataset[3]
    assert sample["degraded"].shape == sample["clean"].shape == (3, 16, 16)
    # deterministic given seed, index and epoch; another epoch crops elsewhere
    assert torch.equal(dataset[3]["degraded"], sample["degraded"])
    assert not torch.equal(dataset[(3, 1)]["clean"], sample["clean"])


def test_pairs_are_matched_as_the_official_loaders_do(tmp_path):
    root = make_training_tree(tmp_path)
    entries = {}
    for entry in training_set(root, "5task", patch_size=16).entries:
        entries.setdefault(entry.task, entry)  # the first of each task
    assert entries["derain"].clean.name == "norain-1.png" and entries["derain"].degraded.name == "rain-1.png"
    assert entries["dehaze"].clean.name == "0025.jpg" and entries["dehaze"].degraded.name == "0025_0.8_0.1.jpg"
    assert entries["deblur"].clean.parent.name == "sharp"
    assert entries["enhance"].clean.parent.name == "gt"


def test_noisy_samples_are_synthesised_from_clean(tmp_path):
    root = make_training_tree(tmp_path)
    dataset = training_set(root, "3task", patch_size=32)
    index = next(i for i, e in enumerate(dataset.entries) if e.task == "denoise_50")
    sample = dataset[index]
    assert 30 < ((sample["degraded"] - sample["clean"]) * 255).std() < 60


@pytest.mark.parametrize("suite", ["3task", "5task"])
def test_evaluation_sets(tmp_path, suite):
    sets = evaluation_sets(make_test_tree(tmp_path), suite)
    assert list(sets) == list(BENCHMARKS[suite])
    for task, dataset in sets.items():
        sample = dataset[0]
        assert sample["clean"].shape == (3, 32, 48)  # 35x50 centre-cropped to multiples of 16
        assert sample["degraded"].shape == sample["clean"].shape
    assert sets["dehaze"].entries[0].clean.name == "0001.png"


def test_cdd11(tmp_path):
    sets = evaluation_sets(make_cdd11_tree(tmp_path), "cdd11")
    assert len(sets) == 11 and len(sets["low_haze_snow"]) == 2
    assert sets["haze_rain"].entries[0].clean.parent.name == "clear"


def test_synthetic_set(tmp_path):
    root = make_training_tree(tmp_path)
    dataset = synthetic_set(root / "Denoise", ("rain", "haze"), patch_size=16, repeat=2)
    assert len(dataset) == 2 * 2 * 2 and {e.task for e in dataset.entries} == {"rain", "haze"}
    assert not torch.equal(dataset[0]["degraded"], dataset[0]["clean"])
    composite = synthetic_set(root / "Denoise", ("noise_25", "rain+haze"), patch_size=16)
    assert {e.task for e in composite.entries} == {"noise_25", "rain+haze"}
    with pytest.raises(ValueError, match=r"unknown degradation 'rain\+fog'"):
        synthetic_set(root / "Denoise", ("rain", "rain+fog"))


def test_dihedral_covers_the_eight_transforms():
    x = torch.arange(6.0).reshape(1, 2, 3)
    assert len({(tuple(dihedral(x, k).flatten().tolist()), tuple(dihedral(x, k).shape)) for k in range(8)}) == 8


def test_missing_folder_says_what_was_expected_where(tmp_path):
    root = make_training_tree(tmp_path)
    shutil.rmtree(root / "Derain" / "gt")
    (root / "Derain" / "gt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"derain training set: .*rain-1.png' has no ground truth; expected .*gt/norain-1.png"):
        training_set(root, "3task")
    with pytest.raises(FileNotFoundError, match=r"denoise_25 training images: expected a folder of images at "
                                                r".*nowhere/Denoise', which does not exist"):
        training_set(tmp_path / "nowhere", "5task")
    other = make_training_tree(tmp_path / "other")
    (other / "Deblur" / "sharp" / "GOPR_0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"deblur training set: .*GOPR_0.png' has no ground truth"):
        training_set(other, "5task")
    with pytest.raises(ValueError, match="unknown benchmark 'sevenfold'"):
        training_set(root, "sevenfold")


def test_corrupt_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match="could not be read"):
        read_image(path)


@pytest.mark.parametrize("patch_size", [16, None])
def test_cached_images_give_the_same_items_and_are_read_once(tmp_path, monkeypatch, patch_size):
    from pyairir.data import datasets

    root = make_training_tree(tmp_path)
    plain = training_set(root, "5task", patch_size=patch_size, seed=3)
    expected = [[plain[(index, epoch)] for index in range(len(plain))] for epoch in (0, 1)]
    cached = training_set(root, "5task", patch_size=patch_size, seed=3, cache_images=True)
    reads = []
    monkeypatch.setattr(datasets, "read_image", lambda path: reads.append(path) or read_image(path))
    for epoch in (0, 1):
        for index in range(len(cached)):
            item = cached[(index, epoch)]
            want = expected[epoch][index]
            assert torch.equal(item["degraded"], want["degraded"]) and torch.equal(item["clean"], want["clean"])
            item["clean"].zero_()  # an item is a copy: changing it must not change the cache
            item["degraded"].zero_()
    files = {p for e in cached.entries for p in (e.clean, e.degraded) if p is not None}
    assert len(reads) == len(set(reads)) == len(files)  # each image decoded once, over two epochs
