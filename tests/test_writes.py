"""No hidden writes: evaluation and calibration leave ``best.pt`` as training wrote it (their
results sit beside it and are still used), and a model exported as a folder (safetensors and
JSON) predicts as its checkpoint does, without unpickling anything."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FOLDERS, real_images

from brainmri.cli.command import main
from brainmri.errors import BrainMRIError
from brainmri.inference.predictor import Predictor
from brainmri.io.preprocess import to_array
from brainmri.models.card import NOTICE
from brainmri.models.checkpoint import load_model, read_checkpoint


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


def test_folder_export_predicts_as_the_checkpoint_without_unpickling(trained_run, real_files, tmp_path, monkeypatch):
    out = tmp_path / "model"
    assert main(["export", str(trained_run), "--format", "folder", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "config.json", "input_check.safetensors", "model.safetensors"]
    readme = (out / "README.md").read_text()
    assert NOTICE in readme and "glioma_tumor" in readme and "resnet18" in readme
    original = read_checkpoint(trained_run)["card"]
    config = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "export"} == json.loads(json.dumps(original))
    assert main(["export", str(trained_run), "--format", "folder", "--out", str(out)]) == 2  # exists

    reference = Predictor(trained_run)
    arrays = [to_array(f, reference.image_size, via=reference.card.get("prepared_size")) for f in real_files]
    expected = torch.from_numpy(reference.predict_arrays(arrays))

    def refuse(*args, **kwargs):
        raise AssertionError("a folder export must load without unpickling")

    with monkeypatch.context() as m:
        m.setattr(torch, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        m.setattr(pickle, "load", refuse)
        folder = Predictor(out)
        model, card = load_model(out)
    assert card["classes"] == reference.classes and not model.training
    got = torch.from_numpy(folder.predict_arrays(arrays))
    assert torch.allclose(got, expected, atol=1e-6)
    assert folder.input_check.status == reference.input_check.status
    assert folder.input_check.threshold == reference.input_check.threshold

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["predict", str(out), *map(str, real_files), "-q", "-o", str(a)]) == 0
    assert main(["predict", str(trained_run), *map(str, real_files), "-q", "-o", str(b)]) == 0
    rows_a, rows_b = (json.loads(p.read_text())["predictions"] for p in (a, b))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["label"] == rb["label"] and ra["input_warning"] == rb["input_warning"]
        pa, pb = (torch.tensor(list(r["probabilities"].values())) for r in (ra, rb))
        assert torch.allclose(pa, pb, atol=1e-6)

    # A damaged folder is one clear error, never a traceback.
    (out / "config.json").write_text("{not json")
    with pytest.raises(BrainMRIError, match="config.json is not valid JSON"):
        Predictor(out)
    (out / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(BrainMRIError, match="not a safetensors file"):
        Predictor(out)
    assert np.isfinite(expected.numpy()).all()


def test_a_training_step_seeds_dropout_and_leaves_the_global_rng_as_it_was():
    from brainmri.training.sampling import step_rng

    torch.manual_seed(123)
    before = torch.get_rng_state()
    dropout = torch.nn.Dropout(0.5)
    with step_rng(torch.device("cpu"), 0, 1, 2, 0):
        a = dropout(torch.ones(64))
    with step_rng(torch.device("cpu"), 0, 1, 2, 0):
        b = dropout(torch.ones(64))
    with step_rng(torch.device("cpu"), 0, 1, 3, 0):
        c = dropout(torch.ones(64))
    assert torch.equal(a, b) and not torch.equal(a, c)  # keyed by the step, not by what ran before
    assert torch.equal(torch.get_rng_state(), before)


def test_a_checkpoint_streams_into_place_and_a_full_disk_is_one_line_that_loses_nothing(tmp_path, monkeypatch):
    """``write_checkpoint`` streams ``torch.save`` into a temporary file and renames it: the
    file reads back as written, and a disk that fills up mid-write is one clear error that
    leaves the previous checkpoint as it was and no temporary file behind."""
    import errno
    import os

    import brainmri.files as files
    from brainmri.labels import CLASSES
    from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model
    from brainmri.models.card import make_card
    from brainmri.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18", weights="none")
    card = make_card("resnet18", 64, "none", CLASSES, IMAGENET_MEAN, IMAGENET_STD)
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, model, card, torch.optim.AdamW(model.parameters()), epoch=3)
    first = read_checkpoint(path, annex=False)
    assert first["epoch"] == 3 and first["card"]["arch"] == "resnet18"
    for key, value in model.state_dict().items():
        assert torch.equal(first["model_state"][key], value), key
    before = sha256(path)

    class FillsUp:
        """An open file on a disk with 1 MB left."""

        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode)))
    with pytest.raises(BrainMRIError) as err:
        save_checkpoint(path, model, card, None, epoch=4)
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert sha256(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
