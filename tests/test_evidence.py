"""The evidence behind reported numbers: provenance records, paired statistics, the leakage
study's arms, temperature scaling, external breakdowns, and the explanation score."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from brainmri import provenance
from brainmri.errors import BrainMRIError
from brainmri.evaluation.external import breakdown, near_duplicate_groups
from brainmri.metrics import paired
from brainmri.metrics.calibration import apply_temperature, brier, fit_temperature, nll
from brainmri.metrics.localisation import (
    Box,
    centre_prior,
    control_rect,
    energy_inside,
    miss_distance,
    peak,
    pointing_hit,
    read_boxes,
    uniform_scores,
)

ROOT = Path(__file__).resolve().parents[1]


# --- provenance ------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_a_dirty_code_tree_is_recorded_with_its_diff(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "m.py").write_text("x = 1\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "n.md").write_text("a\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    monkeypatch.setattr(provenance, "checkout_root", lambda: repo)
    clean = provenance.code_version()
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD").strip() and clean["dirty"] is False
    (repo / "docs" / "n.md").write_text("b\n")  # not code: still clean
    assert provenance.code_version()["dirty"] is False
    (repo / "src" / "m.py").write_text("x = 2\n")
    (repo / "src" / "new.py").write_text("y = 1\n")
    dirty = provenance.code_version()
    assert dirty["dirty"] is True and "uncommitted changes" in provenance.describe(dirty)
    kept = provenance.keep_diff(tmp_path, dirty)
    text = kept.read_text()
    assert "x = 2" in text and "untracked src/new.py" in text
    assert hashlib.sha256(text.encode()).hexdigest() == dirty["diff_sha256"]


def test_a_training_run_records_its_provenance(trained_run):
    env = json.loads((trained_run / "environment.json").read_text())
    assert env["command"] and env["packages"]["torch"] and env["machine"]["cpu_count"] >= 1
    code = env["code"]
    if code["commit"] is not None:  # run from a checkout: the commit is a real one
        assert len(code["commit"]) == 40
        diffs = list(trained_run.glob("source-*.diff"))
        assert bool(diffs) == bool(code["dirty"])


# --- paired statistics -----------------------------------------------------------------------


def test_corrected_t_matches_nadeau_bengio():
    diffs = [0.02, 0.01, 0.03, -0.005, 0.015]
    out = paired.corrected_t(diffs, n_train=800, n_test=200)
    d = np.array(diffs)
    se = np.sqrt((1 / 5 + 200 / 800) * d.var(ddof=1))
    half = stats.t(df=4).ppf(0.975) * se
    assert out["low"] == pytest.approx(d.mean() - half) and out["high"] == pytest.approx(d.mean() + half)
    plain = stats.ttest_1samp(d, 0.0)
    assert out["p"] > plain.pvalue  # the correction widens, never narrows


def test_paired_bootstrap_and_clusters():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.9).astype(float)
    b = (rng.random(400) < 0.7).astype(float)
    out = paired.paired_bootstrap(a, b, n_resamples=1000)
    assert out["low"] < a.mean() - b.mean() < out["high"] and out["low"] > 0
    # 100 images each copied four times: as independent images the CI is too narrow
    base = (rng.random(100) < 0.8).astype(float)
    copies = np.repeat(base, 4)
    groups = np.repeat(np.arange(100).astype(str), 4).tolist()
    _, lo_plain, hi_plain = paired.bootstrap_ratio(copies, n_resamples=1000)
    _, lo_cl, hi_cl = paired.bootstrap_ratio(copies, clusters=groups, n_resamples=1000)
    assert (hi_cl - lo_cl) > 1.5 * (hi_plain - lo_plain)


def test_mcnemar_and_told_apart():
    a = np.array([1] * 30 + [0] * 5 + [1] * 60, dtype=bool)
    b = np.array([0] * 30 + [1] * 5 + [1] * 60, dtype=bool)
    out = paired.mcnemar(a, b)
    assert (out["only_a_right"], out["only_b_right"]) == (30, 5) and out["p"] < 0.001
    assert paired.told_apart({"low": 0.01, "high": 0.05}, {"low": 0.002, "high": 0.03})
    assert not paired.told_apart({"low": 0.01, "high": 0.05}, {"low": -0.01, "high": 0.03})
    assert not paired.told_apart({"low": 0.01, "high": 0.05}, {"low": -0.05, "high": -0.01})


# --- calibration -----------------------------------------------------------------------------


def test_the_verdict_says_why_one_run_per_model_tells_nothing_apart():
    from brainmri.reports.repeats import verdict

    apart = {"low": 0.02, "high": 0.08}
    across = {"low": -0.01, "high": 0.03}
    none = {"mean": None, "low": None, "high": None}
    one = [
        {"a": "resnet50", "b": "resnet101", "seeds": [42], "t_test": none, "bootstrap": apart, "told_apart": False},
        {"a": "resnet50", "b": "resnet152", "seeds": [42], "t_test": none, "bootstrap": across, "told_apart": False},
    ]
    text = verdict(one, "the test side")
    assert "two seeds or more" in text
    assert "excludes zero for ResNet-50 vs ResNet-101" in text and "not for ResNet-50 vs ResNet-152" in text
    t = {"mean": 0.05, "low": 0.01, "high": 0.09}
    two = [{**one[0], "seeds": [42, 43], "t_test": t, "told_apart": True}, {**one[1], "seeds": [42, 43]}]
    text = verdict(two, "the test side")
    assert "told apart: ResNet-50 vs ResNet-101 (higher by 0.050)" in text
    assert "cannot be told apart: ResNet-50 vs ResNet-152" in text


def test_temperature_is_recovered_and_keeps_every_prediction():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 4))
    true_p = np.exp(logits / 2.0)
    true_p /= true_p.sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in true_p])
    over = np.exp(logits)
    over /= over.sum(1, keepdims=True)  # an overconfident model: its logits are twice too large
    t = fit_temperature(over, labels)
    assert t == pytest.approx(2.0, rel=0.1)
    scaled = apply_temperature(over, t)
    assert (scaled.argmax(1) == over.argmax(1)).all()
    assert nll(scaled, labels) < nll(over, labels) and brier(scaled, labels) < brier(over, labels)


# --- the external breakdown ------------------------------------------------------------------


def test_external_breakdown_counts_the_worst_error():
    classes = ["glioma_tumor", "meningioma_tumor", "pituitary_tumor", "normal"]
    y = np.array([0, 1, 2, 3, 3, 0])
    p = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # right
            [0.1, 0.3, 0.1, 0.5],  # a meningioma called normal (its best tumour class is right)
            [0.05, 0.5, 0.4, 0.05],  # a pituitary tumour called meningioma
            [0.0, 0.0, 0.0, 1.0],  # right
            [0.7, 0.1, 0.1, 0.1],  # a normal called glioma
            [0.9, 0.05, 0.05, 0.0],  # right
        ]
    )
    out = breakdown([(y, p)], classes, [f"f{i}" for i in range(6)], n_bootstrap=200)
    assert out["tumours called normal"]["count_mean"] == 1 and out["tumours called normal"]["n"] == 4
    assert out["accuracy"]["value"] == pytest.approx(3 / 6)
    assert out["tumour-only 3-class accuracy"]["value"] == pytest.approx(3 / 4)
    assert out["figshare tumours: sensitivity (a tumour called a tumour)"]["value"] == pytest.approx(3 / 4)
    assert out["Br35H normals: specificity"]["value"] == pytest.approx(1 / 2)


def test_the_external_folder_has_its_near_duplicate_groups(external):
    groups = near_duplicate_groups(external)
    sizes = np.bincount(np.unique(list(groups.values()), return_inverse=True)[1])
    assert len(groups) == 850 and (sizes > 1).sum() == 60 and int((sizes - 1).sum()) == 85


# --- localisation ----------------------------------------------------------------------------


def test_box_scores_on_made_maps():
    box = Box("f.png", "glioma", 0.25, 0.25, 0.2, 0.2, "select")
    assert box.pixels(100) == (15, 15, 35, 35)
    assert box.pixels(100, 0.5) == (10, 10, 40, 40)
    heat = np.zeros((100, 100))
    heat[20, 22] = 1.0
    assert pointing_hit(heat, box, 0.0) and energy_inside(heat, box) == 1.0 and miss_distance(heat, box) == 0
    heat2 = np.zeros((100, 100))
    heat2[38, 20] = 1.0  # three pixels below the box: a miss, a hit with tolerance 0.5
    assert not pointing_hit(heat2, box, 0.0) and pointing_hit(heat2, box, 0.5)
    assert miss_distance(heat2, box) == pytest.approx(4 / 100)
    prior = centre_prior(100)
    assert peak(prior) in {(49, 49), (49, 50), (50, 49), (50, 50)} and not pointing_hit(prior, box, 0.1)
    assert peak(np.ones((9, 9))) == (4, 4)  # a flat map points at its centre, not a corner
    hit, energy = uniform_scores(box, 100, 0.0)
    assert hit == pytest.approx(0.04) and energy == pytest.approx(0.04)
    rect = box.pixels(100)
    other = control_rect(rect, 100)
    assert other == (65, 15, 85, 35)
    wide = control_rect((40, 10, 60, 30), 100)  # its mirror overlaps: moved to the far half
    assert wide[3] - wide[1] == 20 and (wide[1] >= 30 or wide[3] <= 10)


def test_the_shared_boxes_are_read_and_checked(external, tmp_path):
    boxes = read_boxes(external / "boxes.csv")
    assert len(boxes) == 407 and sum(b.half == "select" for b in boxes) == 189
    assert all((external / b.file).is_file() for b in boxes)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label,x_center,y_center,width,height,half\na.jpg,glioma,0.5,0.5,nan,0.1,select\n")
    with pytest.raises(BrainMRIError, match="fractions"):
        read_boxes(bad)
    bad.write_text("file,label\n")
    with pytest.raises(BrainMRIError, match="not a box file"):
        read_boxes(bad)


# --- training-side changes and records -------------------------------------------------------


def test_crops_zoom_in_and_stay_inside_the_image():
    import torch

    from brainmri.config import TrainConfig
    from brainmri.training.augment import augment_batch

    ramp = torch.linspace(20, 250, 64).round().to(torch.uint8).repeat(64, 1)  # value = column
    batch = ramp.expand(64, 1, 64, 64).contiguous()
    still = TrainConfig(rotation=0.0, shift=0.0, zoom=0.0, shear=0.0)
    plain = augment_batch(batch, still.augment_section(), torch.Generator().manual_seed(0))
    assert torch.allclose(plain, batch.float() / 255, atol=1e-5)  # no augmentation: the image itself
    out = augment_batch(batch, still.replace(crop=0.5).augment_section(), torch.Generator().manual_seed(0))
    inner = out[:, 0, 2:-2, 2:-2]  # away from the resampled edge pixels
    assert (inner > 15 / 255).all()  # never padded with black: the crop stays inside the image
    spans = (out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2))) * 255
    assert (spans < 0.95 * 230).float().mean() > 0.7  # most crops see only part of the ramp
    assert (spans > 0.45 * 230).all()  # and at least half of its width


def test_a_run_with_a_validation_side_stores_its_temperature(trained_run, tmp_path):
    from brainmri.config import TrainConfig
    from brainmri.inference.forward import probabilities
    from brainmri.inference.predictor import Predictor
    from brainmri.metrics.calibration import apply_temperature
    from brainmri.models.checkpoint import read_checkpoint
    from brainmri.training.run import train

    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    config = TrainConfig(data=prepared, arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=32,
                         limit_per_class=6, val_size=0.4, device="cpu", deterministic=True)  # fmt: skip
    run = train(config, tmp_path / "run", progress=False)
    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]
    t = card["temperature"]
    assert 0.05 <= t <= 20 and "val side" in card["calibration"]["fitted_on"]
    assert f"T = {t:.3f}" in (run / "train.log").read_text()
    predictor = Predictor(run)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(3)]
    raw = probabilities(predictor.model, np.stack(arrays)[:, None], flip=predictor.flip)
    assert np.allclose(predictor.predict_arrays(arrays), apply_temperature(raw, t), atol=1e-6)


def test_progressive_sizes_cover_the_epochs_and_bad_specs_are_one_line():
    from brainmri.config import TrainConfig

    config = TrainConfig(epochs=10, image_size=128, progressive="64:0.4,96:0.3")
    assert [config.epoch_size(e) for e in range(1, 11)] == [64] * 4 + [96] * 3 + [128] * 3
    assert TrainConfig(epochs=10).epoch_size(1) == TrainConfig().image_size  # none: every epoch full size
    # a run too short for the fractions still ends at full size (1 epoch: 0.65 of it rounds to 1)
    assert TrainConfig(epochs=1, image_size=128, progressive="64:0.35,96:0.3").epoch_size(1) == 128
    assert [TrainConfig(epochs=2, image_size=128, progressive="64:0.35,96:0.3").epoch_size(e) for e in (1, 2)] == [
        64,
        128,
    ]
    for bad in ("64", "64:1.2", "512:0.2", "64:0.6,96:0.5", "x:0.1"):
        with pytest.raises(BrainMRIError, match="--progressive"):
            TrainConfig(image_size=128, progressive=bad).check()


def test_a_progressive_run_trains_its_first_epochs_smaller(trained_run, tmp_path):
    from brainmri.config import TrainConfig
    from brainmri.training.run import train

    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    config = TrainConfig(data=prepared, arch="resnet18", weights="none", epochs=2, batch_size=8, image_size=32,
                         limit_per_class=6, device="cpu", progressive="16:0.5")  # fmt: skip
    run = train(config, tmp_path / "run", progress=False)
    log = (run / "train.log").read_text()
    assert "epoch 1/2 at 16 px" in log and "epoch 2/2 at 32 px" in log and "progressive 16:0.5 then 32 px" in log


def test_the_localisation_goal_is_judged_from_the_record():
    from brainmri.experiments.tables import localisation_findings

    def ci(mean, low, high):
        return {"mean": mean, "low": low, "high": high, "n": 200}

    record = {
        "tolerance": 0.1,
        "chosen": "layercam@layer3",
        "chosen_on_report": {"pointing_0.1": ci(0.85, 0.80, 0.90)},
        "tables": {"report": {"centre prior | -": {"pointing_0.1": ci(0.17, 0.12, 0.23)}}},
    }
    assert "**Met**" in localisation_findings(record)
    record["chosen_on_report"]["pointing_0.1"] = ci(0.20, 0.15, 0.25)
    text = localisation_findings(record)
    assert "**Not met**" in text and "overlaps" in text
    record["chosen_on_report"]["pointing_0.1"] = ci(0.79, 0.74, 0.84)  # clear of the prior, under the goal
    assert "**Not met**" in localisation_findings(record)


def test_publish_keeps_records_drops_weights_and_unfinished_runs(tmp_path):
    from PIL import Image

    from brainmri.experiments.publish import MAX_FIGURE_BYTES, publish

    src = tmp_path / "results"
    done, running = src / "runs" / "resnet50" / "seed42", src / "runs" / "resnet50" / "seed43"
    for run in (done, running):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.pt").write_bytes(b"weights")
        (run / "train.log").write_text("epoch 1\n")
    (done / "summary.json").write_text("{}")
    just_started = src / "runs" / "resnet50" / "seed44"  # no checkpoint yet: its records and log only
    just_started.mkdir(parents=True)
    (just_started / "config.json").write_text("{}")
    (just_started / "train.log").write_text("training resnet50\n")
    (done / "metrics.json").write_text('{"accuracy": 0.9}')
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(done / "curves.png")  # incompressible: well over the limit
    assert (done / "curves.png").stat().st_size > MAX_FIGURE_BYTES
    (src / "report.md").write_text("# report\n")
    (src / "report.html").write_text("<html>big</html>")

    written = {p.relative_to(tmp_path / "out").as_posix() for p in publish(src, tmp_path / "out")}
    assert written == {"report.md", "runs/resnet50/seed42/summary.json", "runs/resnet50/seed42/metrics.json",
                       "runs/resnet50/seed42/train.log", "runs/resnet50/seed42/curves.png"}  # fmt: skip
    assert (tmp_path / "out" / "runs/resnet50/seed42/curves.png").stat().st_size <= MAX_FIGURE_BYTES
    with pytest.raises(BrainMRIError, match="already exists"):
        publish(src, tmp_path / "out")
