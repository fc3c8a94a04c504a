"""What a hostile user tries (issue 23): special files named as images, configuration bombs,
terminal escapes in a model card, a checkpoint that names a huge model, two writers on one run,
file names that are not UTF-8, more folds than a class has images. Each case is one clear line
or one reported file, with bounded memory measured on a real process, never a hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import real_images, run_measured

from brainmri.cli import main


def _cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("brainmri: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def _special_files(folder: Path) -> dict[str, str]:
    """A symlink to /dev/zero, a FIFO and a sparse file past the size limit, named as images;
    each name -> the reason it must be refused with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.png")
    with open(folder / "huge.dcm", "wb") as fh:
        fh.truncate(300 * 2**20)  # sparse: costs no disk
    return {
        "zero.jpg": "not a regular file (a character device)",
        "pipe.png": "not a regular file (a FIFO)",
        "huge.dcm": "file too large (314,572,800 bytes; limit 268,435,456)",
    }


# --- 1. special files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def slice_file(sartaj) -> Path:
    return real_images(sartaj, "glioma_tumor", 1, "Testing")[0]


def test_special_files_given_to_predict_are_refused_unread(tiny_checkpoint, slice_file, tmp_path):
    """A symlink to /dev/zero used to take gigabytes in seconds, a FIFO to hang forever. Now each
    gets its error row; the process's peak memory is that of predicting the real slice alone."""
    reasons = _special_files(tmp_path / "in")
    baseline = run_measured(["predict", tiny_checkpoint, slice_file, "-q"])
    assert baseline.code == 0, baseline.err
    out = tmp_path / "out.json"
    names = [tmp_path / "in" / name for name in reasons]
    run = run_measured(["predict", tiny_checkpoint, slice_file, *names, "-q", "-o", out], baseline.peak_mb + 1500, 120)
    assert run.killed is None, run.killed
    assert run.code == 1 and run.err.endswith("brainmri: 3 of 4 files could not be read\n"), run.err
    rows = {Path(r["name"]).name: r for r in json.loads(out.read_text())["predictions"]}
    assert rows[slice_file.name]["label"]
    assert {name: rows[name]["error"] for name in reasons} == reasons
    assert run.peak_mb < baseline.peak_mb + 100, (run.peak_mb, baseline.peak_mb)


def test_special_files_in_a_dataset_are_reported_and_skipped(small_raw, tmp_path):
    """prepare and audit record each special file as unreadable, with its reason, and go on."""
    src = tmp_path / "src"
    shutil.copytree(small_raw, src)
    reasons = _special_files(src / "glioma_tumor")
    baseline = run_measured(["data", "audit", small_raw, "--out", tmp_path / "audit0", "--workers", "1"])
    assert baseline.code == 0, baseline.err
    limit = baseline.peak_mb + 1500
    run = run_measured(["data", "prepare", src, tmp_path / "prep", "--size", "32", "--workers", "1"], limit, 120)
    assert run.killed is None and run.code == 0, (run.killed, run.err)
    with open(tmp_path / "prep" / "manifest.csv", newline="", encoding="utf-8") as fh:
        import csv

        status = {Path(r["source_path"]).name: r["status"] for r in csv.DictReader(fh)}
    assert {name: status[name] for name in reasons} == {n: f"unreadable: {r}" for n, r in reasons.items()}
    assert run.peak_mb < baseline.peak_mb + 200, (run.peak_mb, baseline.peak_mb)
    run = run_measured(["data", "audit", src, "--out", tmp_path / "audit", "--workers", "1"], limit, 120)
    assert run.killed is None and run.code == 0, (run.killed, run.err)
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert sorted(Path(u["path"]).name for u in audit["unreadable"]) == sorted(reasons), audit["unreadable"]
    assert run.peak_mb < baseline.peak_mb + 200, (run.peak_mb, baseline.peak_mb)


SLOW_PREPARE = """
import sys, time
from brainmri import preparation

def stalled(task):  # a worker busy for good, as on a huge or slow file
    time.sleep(3600)

preparation._prepare_one = stalled
preparation.prepare(sys.argv[1], sys.argv[2], size=32, workers=2, progress=False)
"""


def test_prepare_workers_end_with_their_parent(small_raw, tmp_path):
    """Killing prepare (SIGKILL: no clean-up runs) used to leave its worker processes running."""
    import psutil

    import brainmri

    env = {**os.environ, "PYTHONPATH": str(Path(brainmri.__file__).parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, str(small_raw), str(tmp_path / "out")], env=env)
    me = psutil.Process(parent.pid)
    workers: list[psutil.Process] = []
    try:
        for _ in range(600):
            workers = me.children()
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, "prepare did not start its two workers"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"{len(alive)} workers outlived their parent"
    finally:
        parent.kill()
        for worker in workers:  # only the processes this test started
            try:
                worker.kill()
            except psutil.Error:
                pass
