"""scripts/time_to_accuracy.py: the time to a validation target read off a history, throughput
levers as paired ratios, and a smoke run of the whole script that resumes without retraining."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainmri.data.splitfile import read_split, select_split

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

    tta = _script()

    prepared = tmp_path / "prepared"
    prepare(small_raw, prepared, size=128, workers=1, progress=False)
    out = tmp_path / "tta"
    argv = [sys.executable, str(ROOT / "scripts" / "time_to_accuracy.py"), "--data", str(prepared), "--out", str(out),
            "--arch", "resnet18", "--limit-per-class", "6", "--image-size", "32", "--recipes", "20-epochs",
            "--levers", "no-channels-last", "--pairs", "1", "--pair-epochs", "1", "--targets", "0,1.01"]  # fmt: skip
    first = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((out / "time_to_accuracy.json").read_text())
    recipe = record["recipes"]["20 epochs"]
    first_epoch = tta.read_history(out / "20-epochs")[0]["seconds"]
    assert recipe["targets"]["0.00"] == {"reached": True, "epoch": 1, "seconds": pytest.approx(first_epoch)}
    assert not recipe["targets"]["1.01"]["reached"]  # above any accuracy: never reached
    assert recipe["training_seconds"] > recipe["validation_seconds"] > 0
    assert isinstance(recipe["meets_goal"], bool) and recipe["test_accuracy_ci"][0] <= recipe["test_accuracy"]
    assert 0 <= recipe["test_accuracy"] <= 1 and recipe["median_images_per_second"] > 0
    lever = record["throughput_levers"]["no channels-last"]
    assert lever["pairs"] == 1 and lever["ratio"] == pytest.approx(lever["rates"][0][1] / lever["rates"][0][0])
    # Runs that predate history.csv's val_seconds: their validation is derived from the epoch's
    # images and rate, and agrees with what this run recorded.
    run, old = out / "20-epochs", tmp_path / "old-run"
    old.mkdir()
    for name in ("config.json", "split.csv"):
        (old / name).write_bytes((run / name).read_bytes())
    lines = (run / "history.csv").read_text().splitlines()
    drop = lines[0].split(",").index("val_seconds")
    (old / "history.csv").write_text("".join(",".join(c for i, c in enumerate(row.split(",")) if i != drop) + "\n"
                                             for row in lines))  # fmt: skip
    recorded, seconds = tta.validation_seconds(run), sum(r["seconds"] for r in tta.read_history(run))
    # history.csv keeps 6 significant digits: a wrong count of images would be off by far more
    assert recorded[0] > 0 and tta.validation_seconds(old) == pytest.approx(recorded, abs=1e-4 * seconds)
    # A run against a copy of itself with one right answer made wrong: -1/n, paired, and McNemar
    # sees one discordant image.
    (old / "predictions.csv").write_text((run / "predictions.csv").read_text())
    y_true, proba, _, _ = tta.read_predictions(run / "predictions.csv")
    right = np.flatnonzero(proba.argmax(axis=1) == y_true)
    assert len(right), "the smoke run got no test image right"
    rows = (old / "predictions.csv").read_text().splitlines()
    cells = rows[1 + right[0]].split(",")
    cells[3:] = ["0" if c == max(cells[3:], key=float) else c for c in cells[3:]]  # its best class now scores 0
    cells[3 + (y_true[right[0]] + 1) % 4] = "2"  # and another class wins
    rows[1 + right[0]] = ",".join(cells)
    (old / "predictions.csv").write_text("\n".join(rows) + "\n")
    paired = tta.against(old, run)
    assert paired["mean"] == pytest.approx(-1 / len(y_true)) and paired["n"] == len(y_true)
    assert paired["mcnemar"]["only_a_right"] == 0 and paired["mcnemar"]["only_b_right"] == 1
    assert tta.against(run, run)["mean"] == 0.0
    table = (out / "time_to_accuracy.md").read_text()
    assert "| 20 epochs |" in table and "| no channels-last | 1 | 1 |" in table and "not reached" in table
    finished = sorted(out.glob("**/summary.json"))
    assert len(finished) == 3  # the recipe, and today and the lever for the one pair
    stamps = [p.stat().st_mtime_ns for p in finished]
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in finished] == stamps  # nothing trained again
    assert json.loads((out / "time_to_accuracy.json").read_text())["recipes"] == record["recipes"]
    # Another seed on the same test side: --seed needs --split, and keeps that split's test rows
    # while the validation side is carved again.
    other = tmp_path / "tta-seed43"
    seeded = [*argv[:5], str(other), *argv[6:14], "--levers", "", "--targets", "0", "--seed", "43"]
    refused = subprocess.run(seeded, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "--split" in refused.stderr and not other.exists()
    done = subprocess.run([*seeded, "--split", str(run / "split.csv")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((other / "20-epochs" / "config.json").read_text())["seed"] == 43

    def sides(path: Path, side: str) -> list[str]:
        return sorted(r["path"] for r in select_split(read_split(path), side))

    assert sides(other / "20-epochs" / "split.csv", "test") == sides(run / "split.csv", "test")
    assert sides(other / "20-epochs" / "split.csv", "val") != sides(run / "split.csv", "val")
