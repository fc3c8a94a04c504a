"""Records read once: a training run and its evaluations read the prepared folder's
``manifest.csv`` and ``prepare.json`` once each, through :class:`PreparedFolder`, and
evaluation reads a run's own records through :class:`brainmri.inference.run_record.Run`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from brainmri.config import TrainConfig
from brainmri.data.prepared import MANIFEST, PREPARE_JSON
from brainmri.errors import BrainMRIError
from brainmri.evaluation.evaluate import evaluate_run
from brainmri.inference.run_record import Run
from brainmri.models.checkpoint import load_model
from brainmri.training import run as training_run


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """How often each of a prepared folder's two records is opened from now on (``Path.open``,
    which ``read_text`` uses too)."""
    counts: Counter = Counter()
    open_ = Path.open

    def counting_open(self, *args, **kwargs):
        if self.name in (MANIFEST, PREPARE_JSON):
            counts[self.name] += 1
        return open_(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    return counts


@pytest.fixture(scope="module")
def prepared(trained_run) -> Path:
    return Path(json.loads((trained_run / "config.json").read_text())["data"])


def test_training_and_evaluation_read_the_prepared_records_once(prepared, tmp_path, reads):
    # Training, and the input check's calibration at its end, share one opened prepared folder.
    config = TrainConfig(data=str(prepared), arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=32,
                         limit_per_class=6, val_size=0.3, device="cpu")  # fmt: skip
    run_dir = training_run.train(config, tmp_path / "run", progress=False)
    assert reads == {MANIFEST: 1, PREPARE_JSON: 1}
    assert load_model(run_dir / "checkpoints" / "best.pt")[1]["input_check"]["calibrated_on"]["images"] > 0

    reads.clear()
    metrics = evaluate_run(run_dir, n_bootstrap=0, figures=False, device="cpu")  # the test side, then val
    assert reads == {MANIFEST: 1, PREPARE_JSON: 1}
    assert (run_dir / "val_predictions.csv").is_file() and metrics["source"]["kind"] == "held-out"

    reads.clear()
    outside = tmp_path / "outside"
    shutil.copytree(prepared / "glioma_tumor", outside / "glioma_tumor")
    metrics = evaluate_run(run_dir, data=outside, n_bootstrap=0, figures=False, device="cpu", keep_overlap=True)
    assert reads == {MANIFEST: 1, PREPARE_JSON: 1}
    assert metrics["source"]["overlap_check"] == "done" and metrics["source"]["training_overlap"]


def test_a_run_record_reads_what_evaluation_needs(trained_run, prepared, tmp_path):
    run = Run.read(trained_run, card={"image_size": 64})
    assert run.path == trained_run and run.config["arch"] == "resnet18"
    assert run.split is not None and {r["side"] for r in run.split} >= {"train", "test"}
    assert run.fold is None and run.can_check_overlap()
    assert run.prepared is run.prepared and run.prepared.size == 64  # opened once
    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved, ignore=shutil.ignore_patterns("*.pt"))
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "gone")}))
    (moved / "split.csv").unlink()
    gone = Run.read(moved, card={})
    assert gone.split is None and gone.data is None and not gone.can_check_overlap()
    with pytest.raises(BrainMRIError, match="is not there"):
        _ = gone.prepared
    found = gone.with_data(prepared)  # a prepared folder moved since training, given again
    assert found.data == prepared and found.prepared.size == 64 and gone.data is None
    assert gone.with_data(None) is gone
