"""The input check: images that are not like the training images are flagged by predict (table,
CSV, JSON), the web API and evaluate --data, while real slices from the shared dataset are not;
the calibration is recorded in the card and can be done on an existing run."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXTERNAL, dicom_bytes, need_dataset
from fastapi.testclient import TestClient
from PIL import Image

from brainmri.cli.command import main
from brainmri.data.prepared import read_manifest
from brainmri.data.splitfile import read_split, select_split
from brainmri.errors import BrainMRIError
from brainmri.inference import input_check as ic
from brainmri.inference.predictor import Predictor
from brainmri.io.images import read_gray, read_image
from brainmri.models.checkpoint import read_checkpoint


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def made_images() -> dict[str, bytes]:
    """The four inputs that were classified with confidence before the check existed."""
    bits = np.random.default_rng(0).integers(0, 2, (256, 256))
    return {
        "one-pixel.png": png(np.full((1, 1), 128, dtype=np.uint8)),
        "blank.png": png(np.full((256, 256), 255, dtype=np.uint8)),
        "constant16.png": png(np.full((256, 256), 1000, dtype=np.uint16)),
        "one-bit.dcm": dicom_bytes(bits, bits_stored=1),
    }


def run_slices(run: Path, side: str) -> list[Path]:
    """The original (full-size) Sartaj files of one side of a run's split."""
    config = json.loads((run / "config.json").read_text())
    prepared = Path(config["data"])
    source = Path(json.loads((prepared / "prepare.json").read_text())["settings"]["source"])
    by_output = {r["output_path"]: r["source_path"] for r in read_manifest(prepared)}
    return [source / by_output[r["path"]] for r in select_split(read_split(run / "split.csv"), side)]


@pytest.fixture(scope="module")
def made_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("made")
    for name, data in made_images().items():
        (folder / name).write_bytes(data)
    return folder


def test_cheap_checks_flag_made_images_and_pass_real_slices(sartaj):
    for name, data in made_images().items():
        assert ic.source_reasons(read_gray(data)), name
    reasons = {n: ic.source_reasons(read_gray(d)) for n, d in made_images().items()}
    assert any("too small (1x1)" in r for r in reasons["one-pixel.png"])
    assert any("near-constant" in r for r in reasons["constant16.png"])
    assert any("2 grey levels" in r for r in reasons["one-bit.dcm"])
    real = (
        sorted((sartaj / "Testing" / "glioma_tumor").iterdir())[:10]
        + sorted((need_dataset(EXTERNAL, "external dataset") / "notumor").iterdir())[:10]
    )
    assert all(ic.source_reasons(read_image(f).array, read_image(f).chroma) == [] for f in real)
    # A real slice in false colour is not what a scanner gives: flagged, whatever the model.
    grey = np.asarray(Image.open(real[0]).convert("L"), dtype=np.float64)
    tinted = np.stack([grey, grey * 0.6, grey * 0.3], axis=2).astype(np.uint8)
    decoded = read_image(png(tinted))
    assert decoded.chroma > ic.MAX_CHROMA and decoded.array.shape == grey.shape
    assert any(r.startswith("in colour (chroma") for r in ic.source_reasons(decoded.array, decoded.chroma))


def test_mahalanobis_score_is_the_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    dim, per_class = 16, 400
    cov = np.diag(rng.uniform(0.5, 3.0, dim))
    means = rng.normal(0, 4, (3, dim))
    feats = np.concatenate([rng.multivariate_normal(m, cov, per_class) for m in means])
    labels = np.repeat(np.arange(3), per_class)
    transform, centres = ic.fit_statistics(feats, labels)
    fresh = rng.multivariate_normal(means[1], cov, 200)
    got = ic.score_features(transform, centres, fresh)
    # The direct formula, with the shared covariance of the residuals the fit shrinks towards.
    resid = feats - np.stack([feats[labels == k].mean(0) for k in range(3)])[labels]
    from sklearn.covariance import LedoitWolf

    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(resid).covariance_)
    class_means = np.stack([feats[labels == k].mean(0) for k in range(3)])
    direct = np.sqrt(np.min([np.einsum("nd,de,ne->n", fresh - m, precision, fresh - m) for m in class_means], axis=0))
    np.testing.assert_allclose(got, direct, rtol=1e-4)
    wide = rng.normal(size=(50, 80))  # fewer images than dimensions, as in a small run
    for x in (resid, wide):
        np.testing.assert_allclose(ic.ledoit_wolf(x), LedoitWolf(assume_centered=True).fit(x).covariance_, rtol=1e-9)
    # Calibrated on cross-fitted scores, fresh in-distribution samples pass and shifted ones do not.
    groups = [str(i // 3) for i in range(len(labels))]
    scores = ic.cross_fitted_scores(feats, labels, groups)
    # Each cross-fitted score is the distance under statistics fitted without the image's fold.
    from sklearn.model_selection import GroupKFold

    for fit, held in GroupKFold(n_splits=ic.FOLDS).split(feats, labels, groups):
        refit = ic.fit_statistics(feats[fit], labels[fit])
        np.testing.assert_allclose(scores[held], ic.score_features(*refit, feats[held]), rtol=1e-4)
        assert not np.allclose(scores[held], ic.score_features(transform, centres, feats[held]), rtol=1e-3)
    threshold = np.percentile(scores, ic.PERCENTILE)
    assert np.mean(got > threshold) < 0.05
    shifted = fresh + 3 * np.sqrt(np.diag(cov))
    assert np.all(ic.score_features(transform, centres, shifted) > threshold)
    # Features of a diverged model are refused with one line, not turned into a NaN threshold.
    images = torch.zeros((len(labels), 1, 8, 8), dtype=torch.uint8)
    broken = feats.copy()
    broken[5, 3] = np.nan
    with pytest.raises(BrainMRIError, match="not all finite"):
        ic.fit_statistics_of(broken, images, labels, groups, {})


def test_image_statistics_of_a_batch_are_those_of_each_slice(sartaj, monkeypatch):
    """A batch is measured once and remembered (every model of a comparison measures the same
    slices): what comes back again is the same, a change to one slice is seen, and a caller that
    writes into the rows it got does not change what the next caller gets."""
    from brainmri.inference.image_stats import statistics
    from brainmri.io.preprocess import resize

    files = sorted((sartaj / "Testing" / "glioma_tumor").iterdir())[:6]
    batch = np.stack([resize(read_gray(f), 96) for f in files])[:, None]  # (N, 1, H, W), as models see them
    alone = np.concatenate([statistics(one[None]) for one in batch])
    rows = statistics(torch.from_numpy(batch))
    np.testing.assert_array_equal(rows, alone)
    rows[:] = 0.0
    np.testing.assert_array_equal(statistics(batch), alone)
    inverted = batch.copy()
    inverted[2] = 255 - inverted[2]
    changed = statistics(inverted)
    assert not np.allclose(changed[2], alone[2])
    np.testing.assert_array_equal(np.delete(changed, 2, axis=0), np.delete(alone, 2, axis=0))
    np.testing.assert_array_equal(statistics(batch[:, 0]), alone)  # (N, H, W) alike
    # Two batches measured in turn, as each model of a comparison measures its training side and
    # then the external folder: each is measured once and keeps its own rows.
    from brainmri.inference import image_stats

    measured = []
    monkeypatch.setattr(image_stats, "_one", lambda gray, one=image_stats._one: measured.append(1) or one(gray))
    first, second = batch[:3] // 2, batch[3:] // 2
    rows = [statistics(first), statistics(second)]
    for _ in range(3):
        np.testing.assert_array_equal(statistics(first), rows[0])
        np.testing.assert_array_equal(statistics(second), rows[1])
    assert len(measured) == len(batch)


def test_training_calibrates_the_check_and_records_it_in_the_card(trained_run):
    ckpt = read_checkpoint(trained_run / "checkpoints" / "best.pt")
    entry = ckpt["card"]["input_check"]
    n_train = len(select_split(read_split(trained_run / "split.csv"), "train"))
    assert entry["method"] == "mahalanobis" and entry["percentile"] == ic.PERCENTILE
    assert entry["calibrated_on"]["images"] == n_train and entry["calibrated_on"]["sides"] == ["train"]
    assert entry["threshold"] > entry["training_scores"]["median"] > 0
    stats = ckpt[ic.STATS_KEY]
    assert stats["transform"].shape == (512, 512) and stats["centres"].shape == (4, 512)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["input_check"].startswith("calibrated")
    assert "input check calibrated on" in (trained_run / "train.log").read_text()


def test_one_forward_pass_fits_the_check_the_temperature_and_val_predictions(trained_run, tmp_path, monkeypatch):
    """With a validation side, the end of training runs the kept model over the training side
    and reuses the pass that validated the kept epoch for the validation side: the input check
    it records is what 'brainmri calibrate' fits from the prepared folder, the temperature is
    fitted on the val_predictions.csv it writes (the card's flip averaging, as evaluation
    predicts; the card's val_loss is that file's), and evaluate leaves that file as training
    wrote it."""
    from brainmri.config import TrainConfig
    from brainmri.data.prepared import load_split
    from brainmri.evaluation.evaluate import evaluate_run
    from brainmri.inference import forward
    from brainmri.inference.forward import probabilities
    from brainmri.metrics.calibration import fit_temperature
    from brainmri.metrics.classification import cross_entropy
    from brainmri.metrics.predictions import read_predictions
    from brainmri.models.checkpoint import load_model
    from brainmri.training.run import train

    data = json.loads((trained_run / "config.json").read_text())["data"]
    config = TrainConfig(data=data, arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=32,
                         limit_per_class=8, val_size=0.3, tta=True, deterministic=True, device="cpu",
                         seed=5)  # fmt: skip
    passes: list[int] = []  # images per call of the one inference function
    real_run = forward._run
    monkeypatch.setattr(
        forward, "_run", lambda model, images, *a, **k: passes.append(len(images)) or real_run(model, images, *a, **k)
    )
    run = train(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(forward, "_run", real_run)
    best = run / "checkpoints" / "best.pt"
    ckpt = read_checkpoint(best)
    entry, card = ckpt["card"]["input_check"], ckpt["card"]
    rows = read_split(run / "split.csv")
    n_train, n_val = len(select_split(rows, "train")), len(select_split(rows, "val"))
    assert n_val > 0 and entry["calibrated_on"]["sides"] == ["train", "val"]
    assert sorted(passes) == sorted([n_val, n_train])  # validating epoch 1, then the training side only
    assert entry["calibrated_on"]["images"] == n_train + n_val

    refit, stats = ic.fit_input_check(run, ckpt, device="cpu")  # from the prepared folder, passes of its own
    assert refit["threshold"] == pytest.approx(entry["threshold"], rel=1e-3)
    assert refit["image_statistics"]["threshold"] == pytest.approx(entry["image_statistics"]["threshold"], rel=1e-6)
    torch.testing.assert_close(stats["centres"], ckpt[ic.STATS_KEY]["centres"], rtol=1e-3, atol=1e-3)

    y, proba, paths, classes = read_predictions(run / "val_predictions.csv")
    images, labels, val_paths = load_split(data, run / "split.csv", "val", size=32)
    model, _ = load_model(best)
    assert paths == val_paths and np.array_equal(y, labels.numpy()) and classes == list(card["classes"])
    np.testing.assert_allclose(proba, probabilities(model, images, flip=True), rtol=1e-5, atol=1e-6)
    assert card["temperature"] == pytest.approx(fit_temperature(proba, y), rel=1e-3)
    assert card["metrics"]["val_loss"] == pytest.approx(float(cross_entropy(proba, y).mean()), rel=1e-5)

    written = (run / "val_predictions.csv").read_bytes()
    evaluate_run(run, n_bootstrap=20, device="cpu", tta=False)  # the test side without flips: the file stays
    assert (run / "val_predictions.csv").read_bytes() == written


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {Path(r["file"]).name: r for r in csv.DictReader(fh)}


def test_predict_flags_made_images_not_real_slices(trained_run, made_dir, tmp_path, capsys):
    real = run_slices(trained_run, "train")[:6] + run_slices(trained_run, "test")
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    for i, f in enumerate(real):
        shutil.copy2(f, real_dir / f"real{i}{f.suffix}")
    args = ["predict", str(trained_run), str(made_dir), str(real_dir)]
    assert main([*args, "-o", str(tmp_path / "p.csv")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "warning"
    for name in made_images():
        assert any(name in line and "WARNING: not like the training images" in line for line in table)
    assert not any("real" in line and "WARNING" in line for line in table)

    rows = read_csv(tmp_path / "p.csv")
    for name in made_images():
        assert rows[name]["input_warning"].startswith("not like the training images") and rows[name]["predicted"]
    assert all(rows[f"real{i}{f.suffix}"]["input_warning"] == "" for i, f in enumerate(real))

    assert main([*args, "-o", str(tmp_path / "p.json"), "-q"]) == 0
    preds = {Path(p["name"]).name: p for p in json.loads((tmp_path / "p.json").read_text())["predictions"]}
    assert all(preds[n]["input_warning"] and preds[n]["label"] for n in made_images())
    assert all(preds[f"real{i}{f.suffix}"]["input_warning"] is None for i, f in enumerate(real))


def test_api_flags_made_images_not_real_slices(model_path, trained_run):
    from brainmri.serve.app import create_app

    real = run_slices(trained_run, "test")[:2]
    files = [("files", (n, d, "application/octet-stream")) for n, d in made_images().items()]
    files += [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in real]
    with TestClient(create_app(model_path)) as client:
        body = client.post("/api/predict", files=files).json()
    assert "out-of-distribution" in body["input_check"]
    results = {r["name"]: r for r in body["results"]}
    for name in made_images():
        assert results[name]["ok"] and results[name]["label"]
        assert results[name]["input_warning"].startswith("not like the training images")
    assert all(results[f.name]["input_warning"] is None for f in real)


def test_onnx_export_carries_the_score(trained_run, made_dir, tmp_path):
    from brainmri.inference.export import export_model, load_onnx

    out = export_model(trained_run, tmp_path / "m.onnx")
    proto, card = load_onnx(out)
    assert ic.ONNX_OUTPUT in {o.name for o in proto.graph.output} and card["input_check"]["method"] == "mahalanobis"
    torch_p, onnx_p = Predictor(trained_run), Predictor(out)
    assert onnx_p.input_check.extra == ic.ONNX_OUTPUT
    sources = sorted(made_dir.iterdir()) + run_slices(trained_run, "test")[:3]
    arrays, reasons = zip(*[torch_p.load(s) for s in sources], strict=True)
    from brainmri.io.preprocess import stack

    _, w_torch, s_torch = torch_p.input_check.classify(torch_p.model, stack(arrays), list(reasons))
    _, w_onnx, s_onnx = onnx_p.input_check.classify(onnx_p.session, stack(arrays), list(reasons))
    np.testing.assert_allclose(s_onnx, s_torch, rtol=1e-3)
    assert [w is None for w in w_onnx] == [w is None for w in w_torch]


def test_calibrate_an_existing_run(trained_run, made_dir, tmp_path, capsys):
    run = tmp_path / "old-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("last.pt", "eval"))
    best = run / "checkpoints" / "best.pt"
    ckpt = read_checkpoint(best)  # as a run trained before the input check existed
    original = ckpt["card"].pop("input_check")
    del ckpt[ic.STATS_KEY]
    torch.save(ckpt, best)

    old = Predictor(run)
    assert old.input_check.extra is None and "not calibrated" in old.input_check.status
    rows = old.predict_sources(sorted(made_dir.iterdir()))
    assert all(r.input_warning for r in rows)  # the cheap checks run on every model

    assert main(["calibrate", str(run)]) == 0
    assert "input check calibrated on" in capsys.readouterr().out
    entry = read_checkpoint(best)["card"]["input_check"]
    assert entry["threshold"] == pytest.approx(original["threshold"], rel=1e-3)
    assert Predictor(run).input_check.extra is not None

    assert main(["calibrate", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--overwrite", "--percentile", "99"]) == 0
    assert read_checkpoint(best)["card"]["input_check"]["percentile"] == 99
    assert main(["calibrate", str(run), "--overwrite", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data PREPARED" in err

    # A hand-edited card or statistics that do not fit the model: one line, exit 2.
    ckpt = read_checkpoint(best)
    for damage in ("threshold", "statistics", "image statistics"):
        bad = {**ckpt, "card": {**ckpt["card"], "input_check": {**ckpt["card"]["input_check"]}}}
        if damage == "threshold":
            bad["card"]["input_check"]["threshold"] = float("nan")
        elif damage == "statistics":
            bad[ic.STATS_KEY] = {**ckpt[ic.STATS_KEY], "transform": torch.zeros(3, 3)}
        else:
            image = bad["card"]["input_check"]["image_statistics"]
            bad["card"]["input_check"]["image_statistics"] = {**image, "transform": [[1.0, 2.0]]}
        torch.save(bad, best)
        assert main(["predict", str(run), str(made_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "calibrate RUN --overwrite" in err, damage


def test_evaluate_data_counts_flagged_images(trained_run, tmp_path):
    from brainmri.evaluation.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("last.pt", "eval"))
    folder = tmp_path / "labelled"
    for i, f in enumerate(run_slices(run, "test")):
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, folder / f.parent.name / f"s{i}{f.suffix}")
    (folder / "glioma_tumor" / "blank.png").write_bytes(made_images()["blank.png"])
    (folder / "normal").mkdir(exist_ok=True)
    (folder / "normal" / "one-bit.dcm").write_bytes(made_images()["one-bit.dcm"])
    metrics = evaluate_run(run, data=folder, name="ext", n_bootstrap=10, device="cpu", figures=False)
    with open(run / "eval" / "ext" / "predictions.csv", newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    assert rows["blank.png"]["input_warning"] and rows["one-bit.dcm"]["input_warning"]
    flagged = sum(bool(r["input_warning"]) for r in rows.values())
    assert metrics["input_check"]["flagged"] == flagged and metrics["input_check"]["of"] == len(rows)
    saved = json.loads((run / "eval" / "ext" / "metrics.json").read_text())
    assert saved["input_check"]["flagged"] == flagged


@pytest.mark.slow
def test_the_check_holds_for_a_weak_model(sartaj, tmp_path, capsys):
    """The out-of-distribution score is only as good as the model: on a weak model it flagged only
    57% of scikit-image's sample images and 72% of the made-up ones (uniform noise and a
    photograph of an astronaut passed). Colour and the slice's own statistics (the
    model-independent part) make it hold for a ResNet-18 trained for one epoch from scratch: at
    least 95% of both flagged, at most 5% of MRI slices from the external set."""
    from brainmri.evaluation.input_check_measure import measure_input_check

    src, external = tmp_path / "src", tmp_path / "external"
    for folder in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        (src / folder).mkdir(parents=True)
        for f in sorted((sartaj / "Training" / folder).iterdir())[:100]:
            (src / folder / f.name).symlink_to(f)
    for folder in sorted(need_dataset(EXTERNAL, "external dataset").iterdir()):
        if folder.is_dir():
            (external / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir())[:25]:
                (external / folder.name / f.name).symlink_to(f)
    prepared, runs = tmp_path / "prepared", tmp_path / "runs"
    assert main(["data", "prepare", str(src), str(prepared), "--size", "64", "--no-progress"]) == 0
    argv = [
        "train",
        "--data",
        str(prepared),
        "--arch",
        "resnet18",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs),
        "--name",
        "weak",
    ]
    assert main([*argv, "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    result = measure_input_check(runs / "weak", external)
    shares = {name: s["share_flagged"] for name, s in result["sets"].items()}
    assert shares["scikit-image samples"] >= 0.95, result["sets"]["scikit-image samples"]
    assert shares["made-up images"] >= 0.95, result["sets"]["made-up images"]
    assert shares["external MRI"] <= 0.05 and shares["held-out test side"] <= 0.05, shares
    assert "image statistics" in result["checks"], result["checks"]


def test_calibrate_measure_counts_the_flagged_images_of_every_set(trained_run, small_raw, tmp_path, capsys):
    """``brainmri calibrate RUN --measure EXTERNAL`` on a calibrated run: no second calibration,
    then one row per set (non-MRI images, the run's test side, the external folder)."""
    pytest.importorskip("skimage")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("last.pt", "eval"))
    external = tmp_path / "external"
    external.mkdir()
    for f in sorted((small_raw / "glioma_tumor").iterdir())[:6]:
        shutil.copy(f, external / f.name)
    before = (run / "checkpoints" / "best.pt").read_bytes()
    assert main(["calibrate", str(run), "--measure", str(external)]) == 0
    out = capsys.readouterr().out
    assert "input check calibrated" not in out  # already calibrated: measured only
    assert (run / "checkpoints" / "best.pt").read_bytes() == before
    rows = {line[:24].strip(): line[24:].split() for line in out.splitlines()[3:] if line.strip()}
    assert set(rows) == {"scikit-image samples", "made-up images", "held-out test side", "external MRI"}
    assert rows["external MRI"][:2] == ["6", "0"]  # files, refused
    for name, (files, refused, flagged, share, *_) in rows.items():
        assert int(refused) + int(flagged) <= int(files), name
        assert share == f"{int(flagged) / (int(files) - int(refused)):.1%}", name
    assert int(rows["made-up images"][0]) == 43  # 5 kinds x 8, and the three degenerate ones
