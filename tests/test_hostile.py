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

from brainmri.cli.command import main


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
from brainmri.data import prepare as preparation

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


# --- 2. configuration files -----------------------------------------------------------------


def _laughs(levels: int) -> str:
    """A "billion laughs" YAML file: each level 9 aliases of the one before (kept in the free-form
    ``extra`` setting, which takes any mapping), the last as the value of a number setting."""
    lines = ["extra:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    lines.append(f"lr: *l{levels}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_unexpanded(small_raw, tmp_path):
    """Nine levels of aliases (under 1 kB) used to grow past 3 GB while the error message about
    the value was built; now anchors and aliases are refused in one short line, at once."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_laughs(9))
    assert bomb.stat().st_size < 1024
    baseline = run_measured(["train", "--config", tmp_path / "missing.yaml"])
    assert baseline.code == 2 and "cannot read config file" in baseline.err, baseline.err
    argv = ["train", "--config", bomb, "--data", small_raw, "--runs-dir", tmp_path / "runs"]
    run = run_measured(argv, baseline.peak_mb + 1500, 120)
    assert run.killed is None, run.killed
    assert run.code == 2 and run.err.count("\n") == 1, run.err[:500]
    assert "uses a YAML anchor or alias (line 2)" in run.err and len(run.err) < 300, run.err[:500]
    assert run.peak_mb < baseline.peak_mb + 100, (run.peak_mb, baseline.peak_mb)
    assert not (tmp_path / "runs").exists()


def test_config_errors_are_short_lines_and_files_small(tmp_path, capsys):
    """A value of 100,000 items used to be quoted whole (a line of hundreds of kilobytes)."""
    config = tmp_path / "long.yaml"
    config.write_text("lr: [" + ", ".join(["0.001"] * 100_000) + "]\n")
    code, _, err = _cli(capsys, "train", "--config", config)
    _one_line_error(code, err, "config key 'lr' must be float, got [0.001, ")
    assert len(err) < 300, len(err)
    config = tmp_path / "unknown.json"
    config.write_text(json.dumps({f"setting_{i}" * 50: 1 for i in range(1000)}))
    code, _, err = _cli(capsys, "train", "--config", config)
    _one_line_error(code, err, "unknown config keys: setting_0")
    assert len(err) < 1000, len(err)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000 + "lr: 0.001\n")
    code, _, err = _cli(capsys, "train", "--config", big)
    _one_line_error(code, err, "cannot read config file", "file too large", "limit 1,048,576")
    os.mkfifo(tmp_path / "fifo.yaml")
    for special in ("/dev/zero", tmp_path / "fifo.yaml"):  # in a process of its own: these used to hang
        run = run_measured(["train", "--config", special], 3000, 60)
        assert run.killed is None, run.killed
        _one_line_error(run.code, run.err, "cannot read config file", "not a regular file")


# --- 3. terminal escape codes ----------------------------------------------------------------

#: Set the window title, clear the screen, recolour (7-bit and 8-bit CSI), return to the line's
#: start, reverse the text's direction, fake a line.
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b32m\rback\u202eesrever\nMetrics: accuracy 1.0"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


def test_a_model_card_cannot_write_escape_codes_to_the_terminal(tiny_checkpoint, slice_file, tmp_path, capsys):
    """`brainmri info` used to print a card's text raw: a card could set the window title, clear
    the screen or recolour the terminal, and fake lines. Every control character is now escaped,
    in the card's text and in file names, and each card entry stays on its line."""
    import torch

    from brainmri.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(tiny_checkpoint)
    clean_lines = len(_cli(capsys, "info", tiny_checkpoint)[1].splitlines())
    card = ckpt["card"]
    for key in ("notice", "limitations", "intended_use", "weights_origin", "name"):
        card[key] = ESCAPES
    card["training_data"] = {"source" + ESCAPES: ESCAPES, "nested": {"deeper": ESCAPES}}
    card["metrics"] = {"accuracy": ESCAPES}
    hostile = tmp_path / "hostile.pt"
    torch.save(ckpt, hostile)
    code, out, err = _cli(capsys, "info", hostile)
    assert code == 0, err
    assert not [c for c in RAW if c in out], out
    assert "\\x1b]0;owned\\x07\\x1b[2J" in out and "\\x9b32m\\rback\\u202eesrever\\nMetrics" in out
    assert len(out.splitlines()) == clean_lines + 2, out  # training_data: 3 lines for "(not recorded)"; none faked
    # File names from a folder reach the table escaped too (the prediction still made).
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy2(slice_file, folder / f"{ESCAPES.replace(chr(10), '')}.jpg")
    code, out, err = _cli(capsys, "predict", hostile, folder)
    assert code == 0, err
    assert not [c for c in RAW if c in out + err], out + err
    assert len(out.splitlines()) == 2 and "\\x1b]0;owned" in out


# --- 4. a small checkpoint that names a huge architecture --------------------------------------


def test_weights_are_checked_against_the_architecture_before_it_is_built(tiny_checkpoint, slice_file, tmp_path):
    """A few-kilobyte checkpoint whose card names vit_h_14 (632 million parameters) used to cost
    3.3 GB: the whole model was built before the weights were found not to fit. The names and
    shapes are now compared on the meta device first; refusing costs what predicting costs."""
    import torch

    from brainmri.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(tiny_checkpoint)
    ckpt["card"]["arch"] = "vit_h_14"
    ckpt["model_state"] = {"head.4.weight": torch.zeros(4, 128), "head.4.bias": torch.zeros(4)}
    crafted = tmp_path / "crafted.pt"
    torch.save(ckpt, crafted)
    assert crafted.stat().st_size < 64 * 1024
    baseline = run_measured(["predict", tiny_checkpoint, slice_file, "-q"])
    assert baseline.code == 0, baseline.err
    run = run_measured(["predict", crafted, slice_file, "-q"], baseline.peak_mb + 1500, 300)
    assert run.killed is None, run.killed
    _one_line_error(run.code, run.err, "weights do not match architecture 'vit_h_14'", "tensors missing")
    assert run.peak_mb < baseline.peak_mb + 100, (run.peak_mb, baseline.peak_mb)


# --- 5. one writer per run folder; SIGTERM ------------------------------------------------------


@pytest.fixture(scope="module")
def prepared32(small_raw, tmp_path_factory) -> Path:
    from brainmri.data.prepare import prepare

    out = tmp_path_factory.mktemp("hostile") / "prepared"
    prepare(small_raw, out, size=32, workers=1, progress=False)
    return out


def _config(prepared: Path, **changes):
    from brainmri.config import TrainConfig

    values = dict(data=str(prepared), arch="resnet18", weights="none", epochs=2, batch_size=8, image_size=32,
                  limit_per_class=4, deterministic=True, device="cpu")  # fmt: skip
    return TrainConfig(**{**values, **changes})


def _interrupted_run(prepared: Path, run: Path) -> None:
    """A run stopped after its first step (last.pt saved): something to resume."""
    from brainmri.training.run import train

    def stop(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(prepared), run, progress=False, step_callback=stop)


def test_a_second_writer_of_a_run_folder_is_refused(prepared32, tmp_path):
    """Two `train --resume` of one run used to both train to the end, write the same checkpoints
    and log every line twice. While one process trains, a second resume or overwrite is one line."""
    from brainmri.training.run import train

    runs = tmp_path / "runs"
    _interrupted_run(prepared32, runs / "r")
    others = []

    def second_writers(epoch: int, step: int) -> None:
        if not others:  # while this process holds the run, at its first step
            resume = ["train", "--resume", "--name", "r", "--runs-dir", runs, "--quiet"]
            overwrite = ["train", "--data", prepared32, "--arch", "resnet18", "--weights", "none", "--epochs", "1",
                         "--image-size", "32", "--name", "r", "--runs-dir", runs, "--overwrite", "--quiet"]  # fmt: skip
            others.extend(run_measured(argv, timeout=300) for argv in (resume, overwrite))

    train(_config(prepared32), runs / "r", resume=True, progress=False, step_callback=second_writers)
    for other in others:
        assert other.killed is None, other.killed
        _one_line_error(other.code, other.err, "run folder", "is in use by another brainmri process")
    log = (runs / "r" / "train.log").read_text()
    assert log.count("finished:") == 1 and log.count("resumed ") == 1, log
    assert len(json.loads((runs / "r" / "environment.json").read_text())["resumed"]) == 1
    # Once the first process is done, the lock is gone with it.
    code = main(["train", "--resume", "--name", "r", "--runs-dir", str(runs), "--quiet"])
    assert code == 2  # refused only because the run has finished, not because of a lock


SIGTERM_TRAIN = """
import os, signal, sys
import brainmri.training.loop
from brainmri.cli.command import main

real_step, calls = brainmri.training.loop.train_step, []

def step_then_term(*args, **kwargs):
    out = real_step(*args, **kwargs)
    calls.append(1)
    if len(calls) == 1:  # as `kill PID` would, during the first step
        os.kill(os.getpid(), signal.SIGTERM)
    return out

brainmri.training.loop.train_step = step_then_term
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_training_saves_a_resumable_checkpoint(prepared32, tmp_path):
    """SIGTERM (kill, timeout, a scheduler ending a job) used to end training with nothing saved
    or logged. Like Ctrl-C, it now ends the step, saves last.pt, logs one line, exits non-zero."""
    import brainmri
    from brainmri.models.checkpoint import read_checkpoint

    runs = tmp_path / "runs"
    argv = ["train", "--data", prepared32, "--arch", "resnet18", "--weights", "none", "--epochs", "2",
            "--batch-size", "8", "--image-size", "32", "--limit-per-class", "4", "--deterministic",
            "--device", "cpu", "--name", "r", "--runs-dir", runs, "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(brainmri.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_TRAIN, *map(str, argv)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode not in (0, -signal.SIGTERM), (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    log = (runs / "r" / "train.log").read_text()
    stopped = [line for line in log.splitlines() if "SIGTERM" in line]
    assert len(stopped) == 1 and "stopped by SIGTERM in epoch 1 after step 1; saved last.pt" in stopped[0], log
    last = read_checkpoint(runs / "r" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["extra"]["step"]) == (0, 1)
    assert main(["train", "--resume", "--name", "r", "--runs-dir", str(runs), "--quiet"]) == 0
    assert (runs / "r" / "summary.json").is_file()


# --- empty class folders -------------------------------------------------------------------------


def test_an_empty_class_folder_is_said_and_training_without_a_class_refused(small_raw, tmp_path, capsys):
    """An empty class folder used to be passed over without a word, and training went on with a
    class the model could never learn."""
    src = tmp_path / "src"
    shutil.copytree(small_raw, src)
    for f in (src / "no_tumor").iterdir():
        f.unlink()
    code, out, err = _cli(capsys, "data", "prepare", src, tmp_path / "prep", "--size", "32", "--workers", "1",
                          "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "brainmri: warning: class folder no_tumor holds no images" in err
    assert "brainmri: warning: no images of normal: a model trained on this folder cannot learn that class" in err
    assert json.loads((tmp_path / "prep" / "prepare.json").read_text())["warnings"]
    code, _, err = _cli(capsys, "train", "--data", tmp_path / "prep", "--arch", "resnet18", "--weights", "none",
                        "--epochs", "1", "--image-size", "32", "--runs-dir", tmp_path / "runs", "--quiet")  # fmt: skip
    _one_line_error(code, err, "no training images of normal")
    assert not (tmp_path / "runs").exists()


# --- 6. file names that are not UTF-8 -----------------------------------------------------------


def test_file_names_that_are_not_utf8_are_recorded_escaped(small_raw, tmp_path, capsys):
    """A Latin-1 file name (b'caf\\xe9') used to end prepare in a UnicodeEncodeError traceback."""
    from brainmri.data import prepared as data
    from brainmri.data import splits

    src = tmp_path / "src"
    shutil.copytree(small_raw, src)
    copies = {}  # each a copy: one of the two names is recorded as the other's duplicate
    for folder, name in (("glioma_tumor", b"caf\xe9.jpg"), ("no_tumor", b"\xff\xfe.jpg")):
        first = sorted((src / folder).iterdir())[0]
        shutil.copy2(first, os.fsdecode(bytes(src / folder) + b"/" + name))
        copies[f"{folder}/{first.name}"] = f"{folder}/{str(name)[2:-1]}"  # b'caf\xe9' -> caf\xe9
    code, _, err = _cli(capsys, "data", "prepare", src, tmp_path / "prep", "--size", "32", "--workers", "1",
                        "--no-progress")  # fmt: skip
    assert code == 0 and "Traceback" not in err, err
    rows = {r["source_path"]: r for r in data.read_manifest(tmp_path / "prep")}  # a UTF-8 file
    assert sorted(copies.values()) == ["glioma_tumor/caf\\xe9.jpg", "no_tumor/\\xff\\xfe.jpg"]
    for original, escaped in copies.items():
        assert {rows[original]["status"], rows[escaped]["status"]} == {"kept", "duplicate"}
        kept = original if rows[original]["status"] == "kept" else escaped
        assert rows[original if kept == escaped else escaped]["duplicate_of"] == kept
    assert splits.make_split(tmp_path / "prep")  # the prepared folder is usable as ever


# --- 7. more folds than a class has images ----------------------------------------------------------


def test_more_folds_than_the_smallest_class_is_one_line(small_raw, tmp_path, capsys):
    """`data split --k 100` and `compare --cv 100` used to end in a scikit-learn traceback."""
    src = tmp_path / "src"
    shutil.copytree(small_raw, src)
    for f in sorted((src / "pituitary_tumor").iterdir())[5:]:
        f.unlink()
    prepared = tmp_path / "prep"
    assert _cli(capsys, "data", "prepare", src, prepared, "--size", "32", "--workers", "1", "--no-progress")[0] == 0
    smallest = "the smallest class, pituitary_tumor, has 5 images"
    # 13: more than any class has (scikit-learn raised); 6: more than one class has (folds
    # without pituitary images were written with a warning lost in the output).
    for k in ("13", "6"):
        code, _, err = _cli(capsys, "data", "split", prepared, "--k", k)
        _one_line_error(code, err, f"cannot make {k} folds: {smallest}", "use --k 5 or fewer")
    code, _, err = _cli(capsys, "data", "split", prepared, "--k", "100")
    _one_line_error(code, err, "cannot make 100 folds from 40 image groups", "--k 40 or fewer")
    assert not list(prepared.glob("folds_*"))
    out = tmp_path / "cmp"
    for k, words in (("13", smallest), ("6", smallest)):
        code, _, err = _cli(capsys, "compare", "--data", prepared, "--out", out, "--cv", k, "--archs", "resnet18")
        _one_line_error(code, err, words, "--cv")
    assert not out.exists()
    code, out_text, err = _cli(capsys, "data", "split", prepared, "--k", "5")
    assert code == 0 and "fold 4:" in out_text, err
