"""Which precision each step uses, on either kind of CPU: ``--precision auto`` is tested on a
CPU with native bf16 and on one without by patching the capability probe; the bf16 training
path runs for a step or two at a tiny size (seconds even where bf16 is emulated); and a run's
recorded validation numbers are exactly what ``evaluate`` reports, whatever it trained in."""

from __future__ import annotations

import json
import re

import pytest
import torch

from brainmri import runtime
from brainmri.cli.command import main
from brainmri.config import TrainConfig
from brainmri.models.checkpoint import read_checkpoint
from brainmri.training.run import train


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu_probe(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == expected
    assert runtime.resolve_precision("fp32", torch.device("cpu")) == "fp32"  # asked for, not probed


@pytest.fixture(scope="module")
def prepared(trained_run):
    return json.loads((trained_run / "config.json").read_text())["data"]


def _tiny(prepared: str, **changes) -> TrainConfig:
    values = dict(
        data=prepared, arch="resnet18", weights="none", epochs=1, batch_size=8, image_size=32, limit_per_class=4,
        device="cpu", deterministic=True, seed=3,
    )  # fmt: skip
    return TrainConfig(**{**values, **changes})


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_auto_chose(prepared, tmp_path, monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    run = train(_tiny(prepared, precision="auto"), tmp_path / "run", progress=False)
    expected = "bf16" if native else "fp32"
    assert json.loads((run / "environment.json").read_text())["precision"] == expected
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == expected and summary["eval_precision"] == "fp32"


def test_validation_numbers_of_a_bf16_run_are_what_evaluate_reports(prepared, tmp_path, capsys):
    """Training in bf16 (emulated or native), validating in fp32: the card, the last history row
    and ``brainmri evaluate``'s probabilities of the validation side give one answer."""
    from brainmri.metrics.classification import cross_entropy
    from brainmri.metrics.predictions import read_predictions

    run = train(_tiny(prepared, precision="bf16", epochs=2, val_size=0.4, limit_per_class=6), tmp_path / "bf16",
                progress=False)  # fmt: skip
    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]["metrics"]
    last = (run / "history.csv").read_text().splitlines()[-1].split(",")
    assert main(["evaluate", str(run), "--device", "cpu", "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    y, proba, _, _ = read_predictions(run / "val_predictions.csv")
    accuracy = float((proba.argmax(1) == y).mean())
    assert accuracy == pytest.approx(card["val_acc"], abs=1e-12) == pytest.approx(float(last[4]))
    assert float(cross_entropy(proba, y).mean()) == pytest.approx(card["val_loss"], rel=1e-4)  # 6 digits kept
    assert float(last[3]) == pytest.approx(card["val_loss"], rel=1e-5)  # history keeps 6 digits
    metrics = json.loads((run / "metrics.json").read_text())
    shown = re.search(r"^accuracy\s+(\d\.\d+)", printed, re.M).group(1)
    assert float(shown) == pytest.approx(metrics["accuracy"], abs=6e-5)
