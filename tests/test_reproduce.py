"""``brainmri reproduce --preset quick`` end to end on the shared dataset, resuming, and
``compare --cv`` on a tiny prepared folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import torch_threads
from PIL import Image

from brainmri.cli.command import build_parser, main
from brainmri.experiments.reproduce import PRESETS
from brainmri.render.figures import FIGURES
from brainmri.reports.comparison import METRIC_COLUMNS
from brainmri.reports.paper import PUBLISHED

ARCHS = ("resnet50", "resnet101", "resnet152")


def _table_rows(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


#: The quick preset in this test: its recipe on fewer images and epochs. The whole preset takes
#: 7 minutes on the AVX512-BF16 CPU and 21 on the AVX2 one (fp32): its accuracy is a recorded
#: experiment (docs/results/quick-jobs), and this test checks the pipeline around it.
SMOKE = {"epochs": 1, "limit_per_class": 24}


@pytest.mark.slow
def test_reproduce_quick_end_to_end_and_resume(sartaj, small_external, tmp_path, capfd):
    """The quick preset trains its runs side by side (``--jobs 2`` on 2 cores): their lines come
    from their processes, so the test reads the output at the file descriptors."""
    external = small_external
    n_external = sum(1 for p in external.rglob("*") if p.is_file())
    out = tmp_path / "repro"
    args = ["reproduce", "--preset", "quick", "--data", str(sartaj), "--out", str(out), "--external", str(external)]
    args += ["--epochs", str(SMOKE["epochs"]), "--limit-per-class", str(SMOKE["limit_per_class"])]
    assert main([*args, "--no-progress", "--bootstrap", "200"]) == 0
    printed = capfd.readouterr().out.strip().splitlines()
    html_path = Path(printed[-1])
    assert html_path == out / "quick" / "report.html" and html_path.is_file()
    md = (out / "quick" / "report.md").read_text()

    header, rows = _table_rows(md, "Model")
    assert header[1 : 1 + len(METRIC_COLUMNS)] == list(METRIC_COLUMNS)
    assert [r[0] for r in rows] == ["ResNet-50", "ResNet-101", "ResNet-152"]
    for row in rows:
        assert len(row) == len(header)
        assert all(re.fullmatch(r"\d+\.\d+", cell) for cell in row[1 : 1 + len(METRIC_COLUMNS)]), row
    assert [r[-2] for r in rows] == [f"{PUBLISHED[a]['accuracy']:.2f}" for a in ARCHS]
    _, stats = _table_rows(md, "Model | Test images")
    assert all(re.fullmatch(r"\d\.\d{3}–\d\.\d{3}", r[2]) for r in stats)  # accuracy CI

    # External validation: a table row and a confusion matrix per architecture.
    _, ext_rows = _table_rows(md, "Model | Images")
    assert [r[0] for r in ext_rows] == ["ResNet-50", "ResNet-101", "ResNet-152"]
    assert all(r[1] == str(n_external) and re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)", r[2]) for r in ext_rows)

    # Every figure of every architecture: referenced, present, a valid PNG, embedded in the HTML.
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    expected = [f"runs/{a}/eval/{external.name}/confusion_matrix.png" for a in ARCHS]
    expected += [f"runs/{a}/figures/{name}" for a in ARCHS for name in FIGURES]
    expected += [f"runs/{a}/figures/failures.png" for a in ARCHS]
    assert linked == expected
    for rel in linked:
        with Image.open(out / "quick" / rel) as img:
            assert img.format == "PNG"
            img.verify()
    page = html_path.read_text()
    assert page.count('src="data:image/png;base64,') == len(expected)
    assert "https://" not in page and "http://" not in page

    # The report says what was used and what it cannot claim.
    size = PRESETS["quick"]["image_size"]
    assert "Preset: quick" in md and "Weights: none" in md and f"Image size: {size} x {size}" in md
    assert "not split by patient" in md and "Not for clinical diagnosis" in md
    assert "Model evaluated: the best epoch by accuracy on a validation side" in md  # never the test side
    assert f"image size {size} (paper: 256)" in md and "weights none (paper: imagenet)" in md
    assert "at least 226 exact duplicates" in md

    # Rerunning resumes: prepared data reused, finished architectures skipped; an architecture
    # whose evaluation is missing is evaluated again without retraining.
    (out / "quick" / "runs" / "resnet152" / "metrics.json").unlink()
    checkpoint_mtime = (out / "quick" / "runs" / "resnet152" / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert main([*args, "--no-progress", "--bootstrap", "200"]) == 0
    log = capfd.readouterr().out
    assert "using prepared data" in log
    assert "resnet50: finished earlier, skipped" in log and "resnet101: finished earlier, skipped" in log
    assert "resnet152: evaluating" in log and "resnet152: training" not in log
    assert (out / "quick" / "runs" / "resnet152" / "metrics.json").is_file()
    assert (out / "quick" / "runs" / "resnet152" / "checkpoints" / "best.pt").stat().st_mtime_ns >= checkpoint_mtime

    # Other settings in the same folder are refused instead of mixing two experiments.
    assert main([*args, "--epochs", str(SMOKE["epochs"] + 1), "--no-progress"]) == 2
    assert "other settings (epochs)" in capfd.readouterr().err


@pytest.mark.slow
def test_compare_cross_validation_reports_mean_and_std(trained_run, tmp_path, capsys):
    import json

    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    out = tmp_path / "cv"
    args = ["compare", "--data", prepared, "--out", str(out), "--archs", "resnet18,resnet34", "--cv", "2"]
    args += ["--weights", "none", "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--bootstrap", "50"]
    assert main([*args, "--no-progress"]) == 0
    md = (out / "report.md").read_text()
    header, rows = _table_rows(md, "Model")
    assert [r[0] for r in rows] == ["ResNet-18", "ResNet-34"]
    cells = dict(zip(METRIC_COLUMNS, rows[0][1 : 1 + len(METRIC_COLUMNS)], strict=True))
    assert cells.pop("Avg. validation loss (val side)") == "–"  # no validation side: nothing validated
    assert all(re.fullmatch(r"\d+\.\d+ ± \d+\.\d+", c) for c in cells.values()), rows
    # The folds pair the two architectures: the corrected t-test over folds, the bootstrap over images.
    assert "Paired differences: the test side" in md and "paired by fold" in md
    assert re.search(r"\| ResNet-18 − ResNet-34 \| 2 \| [+-]\d\.\d{3} \|", md)
    assert rows[0][-2:] == ["–", "–"]  # no published numbers for resnet18
    folds = [json.loads((out / "runs" / "resnet18" / f"fold{k}" / "metrics.json").read_text()) for k in (0, 1)]
    pooled = json.loads((out / "runs" / "resnet18" / "pooled" / "metrics.json").read_text())
    kept = sum(1 for _ in (out / "folds_k2.csv").open()) - 1
    assert folds[0]["n"] + folds[1]["n"] == pooled["n"] == kept  # every image tested exactly once
    for name in FIGURES:
        assert (out / "runs" / "resnet18" / "pooled" / name).is_file()
    assert "2 folds" in md
    assert "not available" in md  # an item the run cannot fill is named, with its reason, not left out


def test_finished_only_reports_the_finished_runs_and_trains_nothing(trained_run, tmp_path, capsys):
    """A long grid can be reported while its last runs still train: --finished-only trains
    nothing, leaves the unfinished runs out and says so."""
    import json

    from brainmri.experiments.compare import load_results

    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    out = tmp_path / "grid"
    args = ["compare", "--data", prepared, "--out", str(out), "--archs", "resnet18", "--weights", "none"]
    args += ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--limit-per-class", "6"]
    args += ["--bootstrap", "50", "--no-progress"]
    assert main([*args, "--seeds", "2", "--finished-only"]) != 0
    assert "nothing to report" in capsys.readouterr().err
    assert main([*args, "--seeds", "1"]) == 0  # seed 42 trained and evaluated
    capsys.readouterr()
    assert main([*args, "--seeds", "2", "--finished-only"]) == 0
    said = capsys.readouterr().out
    assert "seed43: not finished, left out of this report" in said
    assert not (out / "runs" / "resnet18" / "seed43").exists(), "--finished-only trained a run"
    assert [r["seed"] for r in load_results(out)["resnet18"]["runs"]] == [42]
    assert "ResNet-18" in (out / "report.md").read_text()


def test_the_scratch_preset_trains_small_images_first_and_none_turns_it_off(tmp_path, capsys):
    """The scratch preset adopted progressive resizing from the time-to-accuracy study;
    ``--progressive none`` trains every epoch at full size, as the recorded depth grid and
    leakage study did, and any other spec is checked before anything is prepared."""
    from brainmri.experiments.reproduce import preset_config

    config = preset_config("scratch")
    assert [config.epoch_size(e) for e in (1, 14, 15, 26, 27, 40)] == [64, 64, 96, 96, 128, 128]
    assert (config.batch_size, config.lr) == (64, 4e-3)  # adopted with it: batches of 64, lr scaled
    assert preset_config("scratch", progressive="").progressive_sizes() == []
    # the recorded depth grid's settings: every epoch at 128 px, batches of 32 at 2e-3
    recorded = ["--progressive", "none", "--batch-size", "32", "--lr", "2e-3"]
    parsed = build_parser().parse_args(["reproduce", "--preset", "scratch", "--data", "d", *recorded])
    assert (parsed.progressive, parsed.batch_size, parsed.lr) == ("none", 32, 2e-3)
    old = preset_config("scratch", progressive=parsed.progressive, batch_size=parsed.batch_size, lr=parsed.lr)
    assert (old.progressive_sizes(), old.batch_size, old.lr) == ([], 32, 2e-3)
    args = ["reproduce", "--preset", "scratch", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]
    assert main([*args, "--progressive", "48:1.5"]) == 2
    assert "--progressive" in capsys.readouterr().err
    # a smaller --image-size than the preset's steps needs --progressive none (or a spec of its own)
    assert main([*args, "--image-size", "64"]) == 2
    assert "--progressive" in capsys.readouterr().err
    assert main([*args, "--image-size", "64", "--progressive", "none"]) == 2  # past the config: the data are absent
    err = capsys.readouterr().err
    assert "--progressive" not in err and "absent" in err
    assert not (tmp_path / "out").exists()


def test_reproduce_passes_the_fused_optimizer_choice_to_every_run():
    """``--fused-optimizer`` / ``--no-fused-optimizer`` override the preset; without either the
    preset's choice stands."""
    from brainmri.experiments.reproduce import preset_config

    for flags, expected in (([], None), (["--fused-optimizer"], True), (["--no-fused-optimizer"], False)):
        parsed = build_parser().parse_args(["reproduce", "--preset", "quick", "--data", "d", *flags])
        assert parsed.fused_optimizer is expected
        config = preset_config("quick", fused_optimizer=parsed.fused_optimizer)
        assert config.fused_optimizer is (preset_config("quick").fused_optimizer if expected is None else expected)
        assert config.optim_section().fused is config.fused_optimizer


def test_runs_side_by_side_are_the_runs_one_at_a_time_with_the_same_threads(trained_run, tmp_path, capsys):
    """``--jobs 2`` trains two runs at once, each in its own process with half the cores: each
    run's records are those of the same run made alone with that many threads, the report keeps
    the order asked for, and a bad --jobs is one line before anything is written."""
    import json

    from brainmri.experiments.compare import load_results
    from brainmri.runtime import usable_cpus

    if usable_cpus() < 2:
        pytest.skip("runs side by side need 2 CPUs")
    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    args = ["compare", "--data", prepared, "--archs", "resnet18,resnet34", "--weights", "none", "--epochs", "1"]
    args += ["--image-size", "32", "--batch-size", "16", "--limit-per-class", "6", "--bootstrap", "50"]
    args += ["--deterministic", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--jobs", str(usable_cpus() + 1)]) != 0
    assert "--jobs must be between 1 and" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    assert main([*args, "--out", str(tmp_path / "together"), "--jobs", "2"]) == 0
    with torch_threads(usable_cpus() // 2):
        assert main([*args, "--out", str(tmp_path / "alone")]) == 0
    assert list(load_results(tmp_path / "together")) == ["resnet18", "resnet34"]
    for arch in ("resnet18", "resnet34"):
        together, alone = tmp_path / "together" / "runs" / arch, tmp_path / "alone" / "runs" / arch
        env = json.loads((together / "environment.json").read_text())
        assert env["torch_threads"] == usable_cpus() // 2
        assert (together / "predictions.csv").read_text() == (alone / "predictions.csv").read_text()
        assert (together / "history.csv").read_text().splitlines()[1].split(",")[:3] == (
            (alone / "history.csv").read_text().splitlines()[1].split(",")[:3]
        )


def test_the_quick_preset_runs_side_by_side_on_a_cpu_and_the_others_one_at_a_time():
    from brainmri.experiments.reproduce import preset_jobs
    from brainmri.runtime import usable_cpus

    assert preset_jobs("quick", "cpu") == min(2, usable_cpus())
    assert preset_jobs("scratch", "cpu") == preset_jobs("paper", "cpu") == 1


def test_a_failing_call_side_by_side_is_raised_as_itself():
    import os

    from brainmri.errors import BrainMRIError
    from brainmri.experiments.side_by_side import run_side_by_side
    from brainmri.runtime import check_threads, usable_cpus

    if usable_cpus() < 2:
        pytest.skip("runs side by side need 2 CPUs")
    assert run_side_by_side(check_threads, [{"threads": 2}, {"threads": 1}, {"threads": 2}], 2) == [2, 1, 2]
    with pytest.raises(BrainMRIError, match="--threads must be between 1 and"):
        run_side_by_side(check_threads, [{"threads": 1}, {"threads": 10**6}, {"threads": 1}], 2)
    # A process that dies (killed, out of memory) is one line, not the executor's traceback.
    with pytest.raises(BrainMRIError, match="ended without a result"):
        run_side_by_side(os._exit, [{"status": 1}, {"status": 1}], 2)
