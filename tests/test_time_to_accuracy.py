"""scripts/time_to_accuracy.py: the time to a validation target read off a history, throughput
levers as paired ratios, and a smoke run of the whole script that resumes without retraining."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "scripts" / "time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_target_counts_every_epoch_up_to_the_first_that_reaches_it():
    tta = _script()
    history = [
        {"epoch": 1, "seconds": 10.0, "val_acc": 0.5},
        {"epoch": 2, "seconds": 12.0},  # not validated this epoch: still counted
        {"epoch": 3, "seconds": 11.0, "val_acc": 0.93},
        {"epoch": 4, "seconds": 10.0, "val_acc": 0.95},
    ]
    assert tta.time_to_target(history, 0.92) == {"reached": True, "epoch": 3, "seconds": 33.0}
    assert tta.time_to_target(history, 0.99) == {"reached": False, "epoch": None, "seconds": 43.0}


def test_throughput_levers_are_the_median_of_paired_ratios():
    tta = _script()
    # (today, lever) images/s: the machine slows down between pairs; each pair's ratio does not.
    result = tta.paired_ratio([(40.0, 44.0), (30.0, 33.0), (50.0, 40.0)])
    assert result["ratio"] == pytest.approx(1.1) and result["pairs"] == 3
    assert result["min"] == pytest.approx(0.8) and result["max"] == pytest.approx(1.1)


@pytest.mark.slow
def test_a_smoke_run_writes_the_tables_and_resumes_without_training_again(small_raw, tmp_path):
    from brainmri.data.prepare import prepare

    prepared = tmp_path / "prepared"
    prepare(small_raw, prepared, size=128, workers=1, progress=False)
    out = tmp_path / "tta"
    argv = [sys.executable, str(ROOT / "scripts" / "time_to_accuracy.py"), "--data", str(prepared), "--out", str(out),
            "--arch", "resnet18", "--limit-per-class", "6", "--recipes", "20-epochs", "--levers", "no-channels-last",
            "--pairs", "1", "--pair-epochs", "1", "--target", "0"]  # fmt: skip
    first = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((out / "time_to_accuracy.json").read_text())
    recipe = record["recipes"]["20 epochs"]
    assert recipe["target"] == {"reached": True, "epoch": 1, "seconds": pytest.approx(recipe["target"]["seconds"])}
    assert 0 <= recipe["test_accuracy"] <= 1 and recipe["median_images_per_second"] > 0
    lever = record["throughput_levers"]["no channels-last"]
    assert lever["pairs"] == 1 and lever["ratio"] == pytest.approx(lever["rates"][0][1] / lever["rates"][0][0])
    table = (out / "time_to_accuracy.md").read_text()
    assert "| 20 epochs |" in table and "| no channels-last | 1 | 1 |" in table
    finished = sorted(out.glob("**/summary.json"))
    assert len(finished) == 3  # the recipe, and today and the lever for the one pair
    stamps = [p.stat().st_mtime_ns for p in finished]
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in finished] == stamps  # nothing trained again
    assert json.loads((out / "time_to_accuracy.json").read_text())["recipes"] == record["recipes"]
