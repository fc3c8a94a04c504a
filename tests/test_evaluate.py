"""Metrics against values computed by hand, and evaluation of a real (tiny) run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from brainmri.metrics.classification import (
    _accuracy_macro_f1,
    bootstrap_ci,
    calibration_bins,
    compute_metrics,
    roc_auc_ovr,
)
from brainmri.metrics.records import BootstrapCI, CalibrationBins, ClassMetrics, EvaluationMetrics, Metrics

CLASSES4 = ("a", "b", "c", "d")
# Ten predictions; class "d" is never predicted.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 2])


def _proba(y_true: np.ndarray, y_pred: np.ndarray, right: float = 0.9, wrong: float = 0.5) -> np.ndarray:
    """Top probability 0.9 on correct predictions and 0.5 on wrong ones, the rest spread evenly."""
    proba = np.zeros((len(y_pred), 4))
    for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        top = right if t == p else wrong
        proba[i] = (1 - top) / 3
        proba[i, p] = top
    return proba


def test_metrics_match_hand_computation_with_a_never_predicted_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UndefinedMetricWarning / division warnings may leak
        m = compute_metrics(Y_TRUE, _proba(Y_TRUE, Y_PRED), CLASSES4, n_bootstrap=200, seed=1)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion_matrix"] == [[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0]]
    assert m["confusion_matrix_normalized"][0] == pytest.approx([0.75, 0.25, 0, 0])
    assert m["confusion_matrix_normalized"][2] == pytest.approx([0.5, 0, 0.5, 0])
    pc = m["per_class"]
    assert [pc[c]["precision"] for c in CLASSES4] == pytest.approx([3 / 4, 2 / 3, 1 / 3, 0.0])
    assert [pc[c]["recall"] for c in CLASSES4] == pytest.approx([3 / 4, 2 / 3, 1 / 2, 0.0])
    assert [pc[c]["f1"] for c in CLASSES4] == pytest.approx([3 / 4, 2 / 3, 0.4, 0.0])
    assert [pc[c]["specificity"] for c in CLASSES4] == pytest.approx([5 / 6, 6 / 7, 6 / 8, 1.0])
    assert [pc[c]["support"] for c in CLASSES4] == [4, 3, 2, 1]
    assert m["macro"]["precision"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 3) / 4)
    assert m["macro"]["recall"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 2) / 4)
    assert m["macro"]["f1"] == pytest.approx((3 / 4 + 2 / 3 + 0.4) / 4)
    assert m["weighted"]["precision"] == pytest.approx((4 * 3 / 4 + 3 * 2 / 3 + 2 * 1 / 3) / 10)
    assert m["weighted"]["recall"] == pytest.approx(0.6)
    assert m["weighted"]["f1"] == pytest.approx((3 + 2 + 0.8) / 10)
    # ECE: six correct at 0.9 (bin 13, gap 0.1) and four wrong at 0.5 (bin 7, gap 0.5).
    assert m["ece"] == pytest.approx(0.6 * 0.1 + 0.4 * 0.5)
    assert m["calibration"]["count"][13] == 6 and m["calibration"]["count"][7] == 4
    assert sum(m["calibration"]["count"]) == 10
    lo, hi = m["ci"]["accuracy"]
    assert 0.0 <= lo < 0.6 < hi <= 1.0
    lo, hi = m["ci"]["macro_f1"]
    assert lo < m["macro"]["f1"] < hi
    # The typed record names every key, and nothing rides beside them.
    assert set(m) == Metrics.__required_keys__
    assert all(set(v) == ClassMetrics.__required_keys__ for v in pc.values())
    assert set(m["ci"]) == BootstrapCI.__required_keys__ and set(m["calibration"]) == CalibrationBins.__required_keys__


def test_a_class_absent_from_the_evaluated_images_is_undefined_not_zero():
    # An external set with no "d" images (three tumour classes only): a perfect classifier on
    # it must score 1.0, not 0.75, on every macro average.
    y = np.array([0, 0, 1, 1, 2, 2])
    m = compute_metrics(y, _proba(y, y), CLASSES4, n_bootstrap=100, seed=0)
    assert m["classes_evaluated"] == ["a", "b", "c"]
    assert m["macro"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})
    assert m["ci"]["macro_f1"] == pytest.approx([1.0, 1.0])
    assert m["per_class"]["d"] == {**m["per_class"]["d"], "precision": None, "recall": None, "f1": None}
    assert m["per_class"]["d"]["support"] == 0
    # Predicting the absent class is still wrong: it costs accuracy and recall, and its precision is 0.
    pred = np.array([0, 3, 1, 1, 2, 2])
    m = compute_metrics(y, _proba(y, pred), CLASSES4, n_bootstrap=100, seed=0)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["per_class"]["d"]["precision"] == 0.0
    assert m["macro"]["recall"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["macro"]["f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1, 2], average="macro"))


def test_roc_auc_by_hand_and_class_absent_from_truth():
    y = np.array([0, 0, 1, 1])
    col0 = np.array([0.9, 0.4, 0.6, 0.2])
    proba = np.stack([col0, 1 - col0, np.zeros(4)], axis=1)
    per_class, macro = roc_auc_ovr(y, proba)
    # positives {0.9, 0.4} against negatives {0.6, 0.2}: 3 of 4 pairs ranked right.
    assert per_class[0] == pytest.approx(0.75)
    assert per_class[1] == pytest.approx(0.75)
    assert per_class[2] is None  # class never in y_true: undefined, not a crash or a warning
    assert macro == pytest.approx(0.75)


def test_calibration_of_a_perfectly_calibrated_bin_is_zero():
    # Ten predictions at confidence 0.7, seven right: accuracy equals confidence.
    y = np.array([0] * 7 + [1] * 3)
    proba = np.tile([0.7, 0.3], (10, 1))
    bins = calibration_bins(y, proba)
    assert bins["ece"] == pytest.approx(0.0)
    assert bins["accuracy"][10] == pytest.approx(0.7)  # 0.7 lies in (10/15, 11/15]


def test_vectorised_bootstrap_statistics_equal_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=(5, 40))
    p = np.where(rng.random((5, 40)) < 0.6, t, rng.integers(0, 3, size=(5, 40)))
    acc, f1 = _accuracy_macro_f1(t, p, 4, np.arange(4))
    for i in range(5):
        assert acc[i] == pytest.approx(accuracy_score(t[i], p[i]))
        assert f1[i] == pytest.approx(f1_score(t[i], p[i], average="macro"))  # over the labels that occur
    # A class of the evaluated set that a resample misses entirely is left out, not scored 0.
    _, f1 = _accuracy_macro_f1(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 1]]), 4, np.arange(3))
    assert f1[0] == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_narrows_with_more_data():
    a = bootstrap_ci(Y_TRUE, Y_PRED, 4, n_resamples=300, seed=3)
    b = bootstrap_ci(Y_TRUE, Y_PRED, 4, n_resamples=300, seed=3)
    assert a == b
    big = bootstrap_ci(np.tile(Y_TRUE, 20), np.tile(Y_PRED, 20), 4, n_resamples=300, seed=3)
    assert big["accuracy"][1] - big["accuracy"][0] < a["accuracy"][1] - a["accuracy"][0]


def test_bad_shapes_are_user_errors():
    import torch

    from brainmri.errors import BrainMRIError
    from brainmri.evaluation.evaluate import predict_proba

    with pytest.raises(BrainMRIError, match="shape"):
        compute_metrics([0, 1], np.zeros((3, 4)), CLASSES4)
    with pytest.raises(BrainMRIError, match="--batch-size must be at least 1, got 0"):
        predict_proba(torch.nn.Identity(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), batch_size=0)


# --- evaluate_run on a real (tiny) training run -------------------------------------------


def _copy_run(run, dest):
    """Evaluation writes into the run folder; work on a copy so the shared fixture stays as trained."""
    import shutil

    dest.mkdir()
    for name in ("config.json", "split.csv", "history.csv", "summary.json", "environment.json"):
        shutil.copy2(run / name, dest / name)
    (dest / "checkpoints").mkdir()
    shutil.copy2(run / "checkpoints" / "best.pt", dest / "checkpoints" / "best.pt")
    return dest


@pytest.mark.slow
def test_evaluate_run_held_out_and_external_folder_agree(trained_run, tmp_path):
    import csv
    import json
    import shutil

    from PIL import Image

    from brainmri.data.prepared import read_manifest
    from brainmri.evaluation.evaluate import evaluate_run, format_table, read_history
    from brainmri.metrics.predictions import read_predictions
    from brainmri.models.checkpoint import read_checkpoint
    from brainmri.render.figures import FIGURES

    run = _copy_run(trained_run, tmp_path / "run")
    m = evaluate_run(run, n_bootstrap=100)
    with (run / "split.csv").open() as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["side"] == "test"]
    assert m["n"] == len(test_rows) and sum(map(sum, m["confusion_matrix"])) == len(test_rows)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"]
    assert (
        Metrics.__required_keys__
        <= set(saved)
        <= EvaluationMetrics.__required_keys__ | EvaluationMetrics.__optional_keys__
    )
    history = read_history(run)
    assert m["run"]["avg_train_loss"] == pytest.approx(np.mean([r["train_loss"] for r in history]))
    assert m["run"]["avg_val_loss"] is None  # no validation side: nothing validated, the test side untouched
    assert m["run"]["training_seconds"] == json.loads((run / "summary.json").read_text())["total_seconds"]
    for name in FIGURES:
        with Image.open(run / "figures" / name) as img:
            assert img.format == "PNG"
    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]
    assert card["metrics"]["accuracy"] == m["accuracy"] and card["metrics"]["n"] == m["n"]
    table = format_table(m)
    assert "macro avg" in table and "95% CI" in table and "training time" in table

    # The same test images as raw source files (JPEGs, under alias folder names) plus an unreadable
    # file: the folder path must give the same predictions as the prepared held-out split.
    prepared = json.loads((run / "config.json").read_text())["data"]
    by_output = {r["output_path"]: r for r in read_manifest(prepared)}
    source_root = json.loads((Path(prepared) / "prepare.json").read_text())["settings"]["source"]
    ext = tmp_path / "external"
    alias = {
        "glioma_tumor": "glioma",
        "meningioma_tumor": "Meningioma",
        "pituitary_tumor": "pituitary",
        "normal": "notumor",
    }
    for r in test_rows:
        src = by_output[r["path"]]["source_path"]
        dest = ext / alias[r["label"]] / src.replace("/", "__")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(source_root) / src, dest)
    (ext / "glioma" / "broken.jpg").write_bytes(b"not a jpeg")
    # Two training images slipped into the "external" set: one copied, one re-encoded.
    train_rows = [by_output[r["path"]] for r in csv.DictReader((run / "split.csv").open()) if r["side"] == "train"]
    copied, reencoded = train_rows[0], train_rows[1]
    shutil.copy2(Path(source_root) / copied["source_path"], ext / alias[copied["label"]] / "copied.jpg")
    with Image.open(Path(source_root) / reencoded["source_path"]) as img:
        img.convert("RGB").save(ext / alias[reencoded["label"]] / "reencoded.jpg", quality=60)
    e = evaluate_run(run, data=ext, name="external", n_bootstrap=100)
    assert e["n"] == m["n"]
    assert [s["path"] for s in e["source"]["skipped"]] == ["glioma/broken.jpg"]
    overlap = {Path(o["path"]).name: o for o in e["source"]["training_overlap"]}
    assert set(overlap) == {"copied.jpg", "reencoded.jpg"} and e["source"]["training_overlap_excluded"]
    assert overlap["copied.jpg"]["matches"] == copied["source_path"] and overlap["copied.jpg"]["exact"]
    assert overlap["reencoded.jpg"]["matches"] == reencoded["source_path"]
    assert "2 image(s) duplicate the run's training data, left out" in format_table(e)
    y_ext, p_ext, _, _ = read_predictions(run / "eval" / "external" / "predictions.csv")
    y_held, p_held, _, _ = read_predictions(run / "predictions.csv")
    assert sorted(y_ext.tolist()) == sorted(y_held.tolist())
    assert np.allclose(np.sort(p_ext, axis=0), np.sort(p_held, axis=0), atol=1e-4)
    assert e["accuracy"] == pytest.approx(m["accuracy"])
    assert (run / "eval" / "external" / "confusion_matrix.png").is_file()
    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]
    assert card["metrics"]["external"]["external"]["n"] == e["n"]
    assert card["metrics"]["accuracy"] == m["accuracy"]  # held-out metrics kept
    kept = evaluate_run(run, data=ext, name="with-overlap", n_bootstrap=0, figures=False, keep_overlap=True)
    assert kept["n"] == e["n"] + 2 and not kept["source"]["training_overlap_excluded"]
    other = shutil.copytree(ext, tmp_path / "other")  # no --name: named after its folder
    unnamed = evaluate_run(run, data=other, n_bootstrap=0, figures=False)
    assert (run / "eval" / "other" / "metrics.json").is_file()
    assert read_checkpoint(run / "checkpoints" / "best.pt")["card"]["metrics"]["external"]["other"]["n"] == unnamed["n"]


def test_a_folder_is_read_once_for_every_model_evaluated_on_it(trained_run, sartaj, tmp_path, monkeypatch):
    """The models of a comparison are evaluated on one external folder in turn: its files are
    decoded once and every model scores the same slices; a file changed since is seen."""
    import shutil

    from brainmri.evaluation import labelled_folder
    from brainmri.evaluation.evaluate import evaluate_run
    from brainmri.metrics.predictions import read_predictions

    folder = tmp_path / "folder"
    for name in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        (folder / name).mkdir(parents=True)
        for f in sorted((sartaj / "Testing" / name).iterdir())[:3]:
            shutil.copy2(f, folder / name / f.name)
    reads = []
    monkeypatch.setattr(
        labelled_folder, "read_image", lambda path, one=labelled_folder.read_image: reads.append(path) or one(path)
    )
    runs = [_copy_run(trained_run, tmp_path / name) for name in ("a", "b")]
    scores = [evaluate_run(run, data=folder, n_bootstrap=0, figures=False) for run in runs]
    assert len(reads) == 12 and scores[0]["n"] == scores[1]["n"] == 12
    predictions = [read_predictions(run / "eval" / "folder" / "predictions.csv") for run in runs]
    assert predictions[0][2] == predictions[1][2]  # the same slices, in the same order
    np.testing.assert_array_equal(predictions[0][1], predictions[1][1])
    broken = sorted((folder / "no_tumor").iterdir())[0]
    broken.write_bytes(b"not an image any more")
    again = evaluate_run(runs[0], data=folder, n_bootstrap=0, figures=False, overwrite=True)
    assert len(reads) == 24 and again["n"] == 11
    assert [s["path"] for s in again["source"]["skipped"]] == [f"no_tumor/{broken.name}"]


def test_evaluate_cli_errors_are_one_line(tmp_path, capsys):
    from brainmri.cli.command import main

    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brainmri: error:") and "best.pt" in err and err.count("\n") == 1


@pytest.mark.slow
def test_evaluate_cli_on_unknown_folder_names_says_how_to_map(trained_run, tmp_path, capsys):
    import json

    from brainmri.cli.command import main

    run = _copy_run(trained_run, tmp_path / "run")
    (tmp_path / "ext" / "tumour_x").mkdir(parents=True)
    prepared = json.loads((run / "config.json").read_text())["data"]
    import csv

    held_out = [r for r in csv.DictReader((run / "split.csv").open()) if (r["side"], r["label"]) == ("test", "normal")]
    img = Path(prepared) / held_out[0]["path"]  # not a training image, which would be left out as overlap
    (tmp_path / "ext" / "tumour_x" / "a.png").write_bytes(img.read_bytes())
    assert main(["evaluate", str(run), "--data", str(tmp_path / "ext")]) == 2
    assert "--label-map" in capsys.readouterr().err
    args = [
        "evaluate",
        str(run),
        "--data",
        str(tmp_path / "ext"),
        "--label-map",
        "tumour_x=normal",
        "--bootstrap",
        "50",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "normal" in out
    assert (run / "eval" / "ext" / "metrics.json").is_file()
