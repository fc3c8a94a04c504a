"""No hidden writes: evaluation and calibration leave ``best.pt`` as training wrote it (their
results sit beside it and are still used)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FOLDERS, real_images

from brainmri.cli.command import main
from brainmri.inference.predictor import Predictor
from brainmri.models.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def real_files(sartaj) -> list[Path]:
    return [p for folder in FOLDERS for p in real_images(sartaj, folder, 3, split="Testing")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_and_calibrate_leave_best_pt_unchanged_and_are_used(trained_run, real_files, tmp_path, capsys):
    from brainmri.evaluation.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("last.pt", "eval"))
    best = run / "checkpoints" / "best.pt"
    before = sha256(best)
    trained = read_checkpoint(best)["card"]

    metrics = evaluate_run(run, n_bootstrap=10, device="cpu", figures=False)
    folder = tmp_path / "labelled"
    for f in real_files:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, folder / f.parent.name / f.name)
    external = evaluate_run(run, data=folder, name="ext", n_bootstrap=10, device="cpu", figures=False)
    assert main(["calibrate", str(run), "--overwrite", "--percentile", "99"]) == 0
    capsys.readouterr()
    assert sha256(best) == before  # byte for byte what training wrote

    card = read_checkpoint(run)["card"]
    assert card["metrics"]["accuracy"] == metrics["accuracy"]
    assert all(card["metrics"][k] == v for k, v in trained["metrics"].items())  # training's, kept
    assert card["metrics"]["external"]["ext"]["n"] == external["n"]
    assert card["input_check"]["percentile"] == 99 != trained["input_check"]["percentile"]
    assert card.get("temperature") == trained.get("temperature")
    predictor = Predictor(run)
    assert predictor.input_check.threshold == pytest.approx(card["input_check"]["threshold"])
    assert predictor.input_check.threshold != pytest.approx(trained["input_check"]["threshold"])
    assert main(["info", str(best), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_check"]["percentile"] == 99
    assert Predictor(best).input_check.threshold == predictor.input_check.threshold  # the file, as predict takes it
    assert main(["predict", str(best), *map(str, real_files), "-q", "-o", str(tmp_path / "p.json")]) == 0

    # A best.pt written anew (a retrained run) is another model: what was recorded about the old one is not applied.
    ckpt = read_checkpoint(best, annex=False)
    ckpt["card"]["created"] = "2000-01-01T00:00:00+00:00"
    torch.save(ckpt, best)
    assert read_checkpoint(run)["card"]["input_check"]["percentile"] == trained["input_check"]["percentile"]
    assert read_checkpoint(run)["card"]["metrics"] == trained["metrics"]
