"""Nothing is replaced unasked, names stay inside their folders, and bad values, damaged files
and odd file names are one line with a non-zero exit: on real slices and files the tests make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FOLDERS, real_images

from brainmri.cli.command import main
from brainmri.data import prepare as preparation
from brainmri.data import prepared as data
from brainmri.data import splitfile, splits
from brainmri.errors import BrainMRIError


def _cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("brainmri: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture(scope="module")
def prepared(small_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "prepared"
    preparation.prepare(small_raw, out, size=32, workers=1, progress=False)
    return out


@pytest.fixture()
def own_prepared(prepared, tmp_path) -> Path:
    """A private copy: these tests try to write into it."""
    return Path(shutil.copytree(prepared, tmp_path / "prepared"))


@pytest.fixture(scope="module")
def slices(sartaj) -> list[Path]:
    return [real_images(sartaj, folder, 1, "Testing")[0] for folder in FOLDERS]


# --- 5. data split ----------------------------------------------------------------------


def test_split_replaces_only_with_overwrite_and_never_the_prepared_records(own_prepared, tmp_path, capsys):
    code, out, _ = _cli(capsys, "data", "split", own_prepared)
    split = own_prepared / "split.csv"
    assert code == 0 and str(split) in out
    first = split.read_bytes()
    code, _, err = _cli(capsys, "data", "split", own_prepared, "--seed", "7")
    _one_line_error(code, err, "already exists", "--overwrite")
    assert split.read_bytes() == first
    assert _cli(capsys, "data", "split", own_prepared, "--seed", "7", "--overwrite")[0] == 0
    assert split.read_bytes() != first and splitfile.read_split(split)

    thesis = tmp_path / "thesis.txt"
    thesis.write_text("three years of work")
    code, _, err = _cli(capsys, "data", "split", own_prepared, "--out", thesis)
    _one_line_error(code, err, "already exists")
    assert thesis.read_text() == "three years of work"

    records = {name: (own_prepared / name).read_bytes() for name in (data.MANIFEST, data.PREPARE_JSON)}
    (tmp_path / "link.csv").symlink_to(own_prepared / data.MANIFEST)
    for target in (
        own_prepared / data.MANIFEST,
        own_prepared / data.PREPARE_JSON,
        own_prepared / "glioma_tumor" / ".." / data.MANIFEST,
        tmp_path / "link.csv",
    ):
        for extra in ([], ["--overwrite"]):
            code, _, err = _cli(capsys, "data", "split", own_prepared, "--out", target, *extra)
            _one_line_error(code, err, "record of the prepared folder")
    assert {name: (own_prepared / name).read_bytes() for name in records} == records
    with pytest.raises(BrainMRIError, match="record of the prepared folder"):
        splits.split(own_prepared, own_prepared / data.MANIFEST, overwrite=True)


# --- 7. predict, export, evaluate outputs -----------------------------------------------


def test_predict_checks_its_outputs_before_any_image(tiny_checkpoint, slices, tmp_path, capsys, monkeypatch):
    import brainmri.inference.predictor

    calls = []
    real_iter = brainmri.inference.predictor.iter_predictions
    monkeypatch.setattr(
        brainmri.inference.predictor, "iter_predictions", lambda *a, **k: calls.append(1) or real_iter(*a, **k)
    )
    existing = tmp_path / "results.csv"
    existing.write_text("earlier results")
    targets = [(["--output", existing], "already exists"), (["--output", tmp_path / "dir.csv"], "is a folder")]
    (tmp_path / "dir.csv").mkdir()
    if Path("/proc/self").is_dir():  # a place that refuses new files, even to root
        targets.append((["--output", "/proc/x.csv"], "cannot write /proc/x.csv"))
    for flags, message in targets:
        code, _, err = _cli(capsys, "predict", tiny_checkpoint, *slices, "-q", *flags)
        _one_line_error(code, err, message)
    assert calls == [] and existing.read_text() == "earlier results"

    assert _cli(capsys, "predict", tiny_checkpoint, *slices, "-q", "-o", existing, "--overwrite")[0] == 0
    assert existing.read_text().startswith("file,predicted") and calls == [1]

    cams = tmp_path / "cams"
    cams.mkdir()
    earlier = cams / f"{slices[0].stem}_gradcam.png"
    earlier.write_bytes(b"an earlier panel")
    code, _, err = _cli(capsys, "predict", tiny_checkpoint, slices[0], "-q", "--explain", cams)
    _one_line_error(code, err, "already holds 1 of these panels", "--overwrite")
    assert earlier.read_bytes() == b"an earlier panel" and calls == [1]
    assert _cli(capsys, "predict", tiny_checkpoint, slices[0], "-q", "--explain", cams, "--overwrite")[0] == 0
    assert earlier.read_bytes().startswith(b"\x89PNG")


def test_export_replaces_an_existing_file_only_with_overwrite(tiny_checkpoint, slices, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    code, _, err = _cli(capsys, "export", tiny_checkpoint, "-o", out)
    _one_line_error(code, err, "already exists", "--overwrite")
    assert out.read_bytes() == b"an earlier export"
    # The int8 file is checked too, before the slow float export.
    fresh = tmp_path / "fresh.onnx"
    (tmp_path / "fresh.int8.onnx").write_bytes(b"an earlier int8 export")
    argv = ["export", tiny_checkpoint, "-o", fresh, "--quantize", "int8", "--calibration", *slices]
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "fresh.int8.onnx already exists")
    assert not fresh.exists() and (tmp_path / "fresh.int8.onnx").read_bytes() == b"an earlier int8 export"
    assert _cli(capsys, "export", tiny_checkpoint, "-o", out, "--overwrite", "--legacy", "--opset", "17")[0] == 0
    from brainmri.inference.export import load_onnx

    assert load_onnx(out)[1]["arch"] == "resnet18"


@pytest.fixture()
def fake_run(tiny_checkpoint, prepared, tmp_path) -> Path:
    """A run folder around the untrained checkpoint: enough for evaluate to find its model."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy2(tiny_checkpoint, run / "checkpoints" / "best.pt")
    (run / "config.json").write_text(json.dumps({"data": str(prepared)}))
    return run


def test_evaluate_keeps_an_earlier_evaluation_unless_overwrite(fake_run, slices, tmp_path, capsys):
    from brainmri.evaluation.evaluate import evaluate_run

    ext = tmp_path / "hospital"
    for folder, f in zip(FOLDERS, slices, strict=True):
        (ext / folder).mkdir(parents=True)
        shutil.copy2(f, ext / folder / f.name)
    first = evaluate_run(fake_run, data=ext, name="hospital_a", n_bootstrap=0, figures=False)
    metrics = fake_run / "eval" / "hospital_a" / "metrics.json"
    before = metrics.read_bytes()
    assert first["n"] == len(slices)
    code, _, err = _cli(capsys, "evaluate", fake_run, "--data", ext, "--name", "hospital_a")
    _one_line_error(code, err, "already holds an evaluation", "--overwrite", "--name")
    assert metrics.read_bytes() == before
    evaluate_run(fake_run, data=ext, name="hospital_a", n_bootstrap=5, figures=False, overwrite=True)
    assert json.loads(metrics.read_text())["ci"]["n_resamples"] == 5
    for bad in ("../outside", "a/b", "..", "two\nlines"):
        code, _, err = _cli(capsys, "evaluate", fake_run, "--data", ext, "--name", bad)
        _one_line_error(code, err, "--name must be a plain folder name")
    assert not (tmp_path / "outside").exists() and not (fake_run / "eval" / "a").exists()
    # The held-out evaluation in the run folder is kept the same way.
    (fake_run / "metrics.json").write_text("{}")
    code, _, err = _cli(capsys, "evaluate", fake_run)
    _one_line_error(code, err, "already holds an evaluation", "--overwrite")
    assert (fake_run / "metrics.json").read_text() == "{}"


# --- 8, 13. train names and folds ---------------------------------------------------------


def test_train_name_is_one_folder_inside_runs_dir(prepared, tmp_path, capsys):
    runs = tmp_path / "deep" / "runs"
    for name in ("../../x", "../x", "a/b", "/abs", ".", "..", "two\nlines", ""):
        code, _, err = _cli(capsys, "train", "--data", prepared, "--runs-dir", runs, "--name", name, "--epochs", "1")
        _one_line_error(code, err, "--name must be a plain folder name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], "nothing may be written, inside or outside"


def test_train_fold_without_split_and_a_split_that_is_not_utf8(prepared, fake_run, tmp_path, capsys):
    code, _, err = _cli(capsys, "train", "--data", prepared, "--fold", "3", "--runs-dir", tmp_path / "runs")
    _one_line_error(code, err, "--fold needs --split")
    bad = tmp_path / "split.csv"
    bad.write_bytes(b"path,label,group,side\n\xff\xfe\x00glioma,\x81\n")
    code, _, err = _cli(capsys, "train", "--data", prepared, "--split", bad, "--runs-dir", tmp_path / "runs")
    _one_line_error(code, err, "not a readable split file")
    assert not (tmp_path / "runs").exists()
    # evaluate on a run whose own split.csv is damaged
    shutil.copy2(bad, fake_run / "split.csv")
    code, _, err = _cli(capsys, "evaluate", fake_run)
    _one_line_error(code, err, "not a readable split file")
    code, _, err = _cli(capsys, "evaluate", fake_run, "--bootstrap", "-5")
    _one_line_error(code, err, "--bootstrap", "at least 0")


# --- 9, 10, 13. bounds and values ------------------------------------------------------------


def test_thread_counts_are_bounded_by_the_machine(tiny_checkpoint, slices, capsys):
    import torch

    from brainmri.inference.predictor import Predictor
    from brainmri.runtime import usable_cpus

    limit = usable_cpus()
    for backend in ("torch", "onnx"):
        for threads in ("100000", str(limit + 1), "0", "-2"):
            argv = ["predict", tiny_checkpoint, slices[0], "--backend", backend, "--threads", threads]
            code, _, err = _cli(capsys, *argv)
            _one_line_error(code, err, "--threads")
    code, _, err = _cli(capsys, "serve", tiny_checkpoint, "--workers", "100000")
    _one_line_error(code, err, "--workers", f"between 1 and {limit}")
    with pytest.raises(BrainMRIError, match=f"between 1 and {limit}"):
        Predictor(tiny_checkpoint, threads=100000)
    before = torch.get_num_threads()
    try:
        assert _cli(capsys, "predict", tiny_checkpoint, slices[0], "-q", "--threads", str(limit))[0] == 0
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "MODEL", "--max-mb", "nan"], "--max-mb"),
        (["serve", "MODEL", "--max-mb", "inf"], "--max-mb"),
        (["serve", "MODEL", "--max-mb", "-1"], "--max-mb"),
        (["serve", "MODEL", "--max-mb", "1e308"], "--max-mb"),  # was an OverflowError traceback
        (["serve", "MODEL", "--host", "127.0.0.2"], "127.0.0.1"),
        (["data", "fetch", "--url", "notaurl", "--dest", "DEST"], "--url must be"),
        (["data", "fetch", "--url", "ftp://example.org/x.zip", "--dest", "DEST"], "--url must be"),
        (["data", "prepare", "SRC", "OUT", "--workers", "-3"], "--workers"),
        (["data", "prepare", "SRC", "OUT", "--workers", "0"], "--workers"),
        (["evaluate", "RUN", "--bootstrap", "-5"], "--bootstrap"),
        (["compare", "--data", "SRC", "--bootstrap", "-1"], "--bootstrap"),
    ],
)
def test_bad_values_are_one_line(argv, message, tiny_checkpoint, small_raw, tmp_path, capsys):
    names = {"MODEL": tiny_checkpoint, "DEST": tmp_path / "d", "SRC": small_raw, "OUT": tmp_path / "o", "RUN": tmp_path}
    code, _, err = _cli(capsys, *(names.get(a, a) for a in argv))
    _one_line_error(code, err, message)
    assert sorted(tmp_path.iterdir()) == []


def test_the_upload_limit_is_bounded_by_the_file_limit(capsys):
    """--max-mb is checked when parsed (no server starts): at most 256 MB, what predict reads."""
    from brainmri.cli.command import build_parser

    assert build_parser().parse_args(["serve", "m.pt", "--max-mb", "256"]).max_mb == 256
    for value in ("256.5", "1e6", "1e308"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "m.pt", "--max-mb", value])
        err = capsys.readouterr().err
        assert "--max-mb: must be a number of MB above 0 and at most 256" in err and err.count("\n") == 1, err


def test_data_without_an_action_prints_help_and_fails(capsys):
    code, out, _ = _cli(capsys, "data")
    assert code == 2 and "fetch" in out and "prepare" in out and "split" in out


# --- 12. file names that are not plain printable text ----------------------------------------


def test_odd_file_names_stay_on_one_row_and_one_line(tiny_checkpoint, slices, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "two\nlines.jpg"
    shutil.copy2(slices[0], good)
    (folder / "tab\there.png").write_text("not an image")
    code, out, err = _cli(capsys, "predict", tiny_checkpoint, folder, folder / "gone\rmissing.jpg")
    assert code == 1 and err == "brainmri: 2 of 3 files could not be read\n"
    lines = out.splitlines()
    assert len(lines) == 4, out  # header + one row per file
    assert any(line.startswith(repr(str(good))) for line in lines[1:]), out
    assert any("'" + str(folder) + "/tab\\there.png'" in line for line in lines), out
    assert any("\\rmissing.jpg" in line and "ERROR" in line for line in lines), out
    # In an error message too: a folder without images, with a newline in its name.
    empty = tmp_path / "empty\nfolder"
    empty.mkdir()
    code, _, err = _cli(capsys, "predict", tiny_checkpoint, empty)
    _one_line_error(code, err, "empty\\nfolder")
