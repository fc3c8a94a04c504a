"""The controlled leakage study (experiments/leakage.py, leakage_arms.py): its two arms differ
only in the leakage, its copy effect is the difference of paired differences it says, and the
whole study runs end to end on a tiny model. The folder is made here: random slices with
copies planted across them (no shared dataset needed)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_threads
from PIL import Image

from brainmri.config import TrainConfig
from brainmri.data.prepare import prepare
from brainmri.experiments.leakage import copy_effect, findings, run_leakage_study
from brainmri.experiments.leakage_arms import ARMS, leakage_splits
from brainmri.labels import CLASSES

PER_CLASS = 12  # distinct slices per class
COPIES = 3  # of them, per class, also appear a second time (a duplicate group of two files)


@pytest.fixture(scope="module")
def raw_with_copies(tmp_path_factory) -> Path:
    """Class folders of made slices, some copied within their class, and one copied into
    another class (a label conflict, which the study leaves out)."""
    raw = tmp_path_factory.mktemp("leak") / "raw"
    rng = np.random.default_rng(7)
    for c in CLASSES:
        (raw / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            yy, xx = np.mgrid[:48, :48]
            blob = 120 * np.exp(-((yy - rng.integers(10, 38)) ** 2 + (xx - rng.integers(10, 38)) ** 2) / 80)
            img = np.clip(blob + rng.normal(60, 25, (48, 48)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(raw / c / f"{c}-{i:02d}.png")
            if i < COPIES:
                Image.fromarray(img).save(raw / c / f"{c}-{i:02d}-copy.png")
    shutil.copy(raw / CLASSES[0] / f"{CLASSES[0]}-{PER_CLASS - 1:02d}.png", raw / CLASSES[1] / "conflict.png")
    return raw


@pytest.fixture(scope="module")
def prepared_with_copies(raw_with_copies, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("leak-prep") / "prepared"
    prepare(raw_with_copies, out, size=32, workers=1, progress=False)
    return out


def test_the_two_arms_differ_only_in_the_leakage(prepared_with_copies):
    drawn = leakage_splits(prepared_with_copies, seed=3, test_size=0.25)
    test = {arm: sorted(r["path"] for r in drawn[arm] if r["side"] == "test") for arm in ARMS}
    train = {arm: [r for r in drawn[arm] if r["side"] == "train"] for arm in ARMS}
    assert test["group"] == test["random"] and test["group"]  # one common test set
    per_class = {arm: Counter(r["label"] for r in train[arm]) for arm in ARMS}
    assert per_class["group"] == per_class["random"] == Counter(drawn["counts"]["train_per_class"])
    # The group arm holds no duplicate group of a test image; the random arm may.
    test_groups = {r["group"] for r in drawn["group"] if r["side"] == "test"}
    assert not test_groups & {r["group"] for r in train["group"]}
    random_groups = {r["group"] for r in train["random"]}
    assert drawn["copies"] == {r["path"]: r["group"] in random_groups for r in drawn["random"] if r["side"] == "test"}
    assert drawn["counts"]["test_with_copy_in_random_train"] == sum(drawn["copies"].values())
    # The label conflict (one file in two classes) is in neither arm.
    assert drawn["counts"]["left_out_label_conflict_groups"] == 1
    assert not any("conflict" in r["path"] for arm in ARMS for r in drawn[arm])
    assert leakage_splits(prepared_with_copies, seed=3, test_size=0.25) == drawn  # seeded


def test_the_copy_effect_is_a_difference_of_paired_differences():
    # Image-runs: random minus group correctness, 10 with a copy in training and 10 without.
    with_copy = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    without = [0.0, -1.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.0]
    deltas = np.array(with_copy + without)
    has_copy = np.array([True] * 10 + [False] * 10)
    units = [f"img{i}" for i in range(20)]
    effect = copy_effect(deltas, has_copy, units, n_resamples=500)
    assert effect["with_copy_delta"] == pytest.approx(0.7) and effect["without_copy_delta"] == pytest.approx(-0.1)
    assert effect["mean"] == pytest.approx(0.8) and effect["low"] < 0.8 < effect["high"]
    assert (effect["n_with"], effect["n_without"]) == (10, 10)
    # An image drawn by two seeds counts twice in the means and is resampled as one cluster.
    twice = copy_effect(np.r_[deltas, 1.0], np.r_[has_copy, True], [*units, "img0"], n_resamples=500)
    assert twice["n_with"] == 11 and twice["mean"] == pytest.approx(8 / 11 + 0.1)
    none = copy_effect(deltas, np.zeros(20, dtype=bool), units)
    assert none["mean"] is None and none["n_without"] == 20


def _tiny_config(prepared: Path) -> TrainConfig:
    """One epoch of a resnet18 at 32 px, deterministic: a study in seconds."""
    return TrainConfig(data=str(prepared), arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=32,
                       device="cpu", deterministic=True, seed=5, test_size=0.25)  # fmt: skip


@pytest.mark.slow
def test_the_study_runs_end_to_end_and_says_what_its_numbers_say(prepared_with_copies, tmp_path):
    config = _tiny_config(prepared_with_copies)
    out = tmp_path / "leakage"
    study = run_leakage_study(prepared_with_copies, out, config, seeds=1, n_bootstrap=50, progress=False,
                              log=lambda *a, **k: None)  # fmt: skip
    assert json.loads((out / "leakage.json").read_text())["seeds"] == [5]
    assert (out / "leakage.md").is_file() and (out / "leakage.html").is_file()
    seed = study["per_seed"][0]
    for arm in ARMS:  # ordinary run folders, evaluated on the common test set
        metrics = json.loads((out / "seed5" / arm / "metrics.json").read_text())
        assert seed[arm]["test_accuracy"] == metrics["accuracy"]
        assert metrics["n"] == seed["counts"]["test"]
    diff = seed["random"]["test_accuracy"] - seed["group"]["test_accuracy"]
    assert study["test_difference"]["per_seed"] == [pytest.approx(diff)]
    assert seed["test_with_copy"] == seed["counts"]["test_with_copy_in_random_train"]
    text = "\n".join(findings(study))
    assert "random arm scores" in text and "one seed: no CI across seeds" in text
    # Resumed with the same settings: nothing retrained, the same study.
    again = run_leakage_study(prepared_with_copies, out, config, seeds=1, n_bootstrap=50, progress=False,
                              log=lambda *a, **k: None)  # fmt: skip
    assert again["per_seed"] == study["per_seed"]
    with pytest.raises(Exception, match="other settings"):
        run_leakage_study(prepared_with_copies, out, config.replace(epochs=2), seeds=1, progress=False,
                          log=lambda *a, **k: None)  # fmt: skip


@pytest.mark.slow
def test_the_arms_side_by_side_are_the_arms_one_at_a_time_with_the_same_threads(prepared_with_copies, tmp_path):
    """``jobs=2`` trains the two arms at once, each process with half the cores: the study is the
    one made one arm at a time with that many threads; a bad ``jobs`` stops before anything is
    written."""
    from brainmri.errors import BrainMRIError
    from brainmri.runtime import usable_cpus

    if usable_cpus() < 2:
        pytest.skip("runs side by side need 2 CPUs")
    config = _tiny_config(prepared_with_copies)
    quiet = dict(seeds=1, n_bootstrap=50, progress=False, log=lambda *a, **k: None)
    with pytest.raises(BrainMRIError, match="--jobs must be between 1 and"):
        run_leakage_study(prepared_with_copies, tmp_path / "bad", config, jobs=usable_cpus() + 1, **quiet)
    assert not (tmp_path / "bad").exists()

    together = run_leakage_study(prepared_with_copies, tmp_path / "together", config, jobs=2, **quiet)
    with torch_threads(usable_cpus() // 2):
        alone = run_leakage_study(prepared_with_copies, tmp_path / "alone", config, **quiet)
    assert together["per_seed"] == alone["per_seed"]
    for arm in ARMS:
        run = tmp_path / "together" / "seed5" / arm
        assert json.loads((run / "environment.json").read_text())["torch_threads"] == usable_cpus() // 2
        assert (run / "predictions.csv").read_text() == (
            tmp_path / "alone" / "seed5" / arm / "predictions.csv"
        ).read_text()
