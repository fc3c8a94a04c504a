"""scripts/gpu_check.sh and scripts/gpu_grid.sh stay runnable: without a GPU each runs its
reduced mode on the CPU and writes its logs and records under one folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_script_runs_in_its_reduced_mode(small_raw, small_external, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run its full mode (minutes on a GPU, not a test)")
    out = tmp_path / "check"
    env = {**os.environ, "DATA": str(small_raw), "EXTERNAL": str(small_external), "MODE": "reduced",
           "PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    failed = {s["step"]: (out / f"{s['step']}.log").read_text()[-2000:] for s in summary["steps"] if s["exit"]}
    assert done.returncode == 0 and failed == {}, failed
    assert [s["step"] for s in summary["steps"]] == [
        "environment", "tests", "bench", "prepare", "train", "evaluate", "evaluate-external", "torchrun",
    ]  # fmt: skip
    assert summary["mode"] == "reduced" and summary["device"] == "cpu" and summary["torchrun_finished"]
    assert 0 <= summary["test_accuracy"] <= 1 and 0 <= summary["external_accuracy"] <= 1
    assert json.loads((out / "bench.json").read_text())


@pytest.mark.slow
def test_the_gpu_grid_script_runs_in_its_reduced_mode_and_publishes_records(small_raw, small_external, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run the full 40-epoch grid (not a test)")
    out = tmp_path / "grid"
    env = {**os.environ, "DATA": str(small_raw), "EXTERNAL": str(small_external), "MODE": "reduced",
           "PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_grid.sh"), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results" / "depth" / "results.json").read_text())
    assert {arch: len(r["runs"]) for arch, r in results["archs"].items()} == {"resnet18": 2, "resnet34": 2}
    leakage = json.loads((out / "results" / "leakage" / "leakage.json").read_text())
    assert leakage["seeds"] == [42, 43] and leakage["provenance"]["code"]["commit"] is not None
    assert (out / "results" / "depth" / "report.md").is_file() and (out / "results" / "grid.log").is_file()
    assert not list((out / "results").rglob("*.pt"))  # records only, never checkpoints
