"""Training on a few dozen real images at 64 px: run folder, resume, determinism, reloading,
torchrun, the command line and the batch augmentation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from brainmri.cli.args import train_config_from_args
from brainmri.cli.command import build_parser, main
from brainmri.config import TrainConfig
from brainmri.data import prepared as data
from brainmri.data import splits
from brainmri.data.prepared import load_split
from brainmri.errors import BrainMRIError
from brainmri.inference.forward import score
from brainmri.labels import CLASSES
from brainmri.models.checkpoint import load_model, read_checkpoint
from brainmri.runtime import resolve_precision
from brainmri.training.augment import affine_matrices, make_augmenter, sample_params
from brainmri.training.records import HISTORY_COLUMNS
from brainmri.training.run import train
from brainmri.training.sampling import class_weights, epoch_order


def read_history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def prepared(trained_run) -> Path:
    return Path(json.loads((trained_run / "config.json").read_text())["data"])


def tiny_config(prepared: Path, **changes) -> TrainConfig:
    values = dict(
        data=str(prepared),
        arch="resnet18",
        weights="none",
        epochs=2,
        batch_size=8,
        image_size=64,
        limit_per_class=6,
        deterministic=True,
        device="cpu",  # the tests mean the CPU, also on a machine with a GPU
    )
    return TrainConfig(**{**values, **changes})


@pytest.mark.slow
def test_resnet50_epoch_writes_the_whole_run_folder(prepared, tmp_path):
    config = tiny_config(prepared, arch="resnet50", epochs=1, tensorboard=True, deterministic=False, val_size=0.3)
    run = train(config, tmp_path / "r50", progress=False)

    assert json.loads((run / "config.json").read_text()) == config.to_dict()
    history = read_history(run)
    assert len(history) == 1 and tuple(history[0]) == HISTORY_COLUMNS
    assert 0.0 <= float(history[0]["val_acc"]) <= 1.0 and float(history[0]["images_per_second"]) > 0
    with (run / "split.csv").open() as fh:
        split = list(csv.DictReader(fh))
    n_train = sum(r["side"] == "train" for r in split)
    assert n_train == 24 and {r["side"] for r in split} == {"train", "val", "test"}
    assert "epoch 1/1 train_loss" in (run / "train.log").read_text()
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["epochs"] == 1 and len(summary["epoch_seconds"]) == 1
    assert summary["total_seconds"] >= summary["epoch_seconds"][0] > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]
    assert card["arch"] == "resnet50" and card["classes"] == list(CLASSES)
    assert sum(card["training_data"]["counts"].values()) == n_train
    assert card["split"]["train"] == n_train and card["metrics"]["val_acc"] == pytest.approx(summary["best_val_acc"])
    last = read_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["optimizer_state"] is not None


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_history_as_an_uninterrupted_one(prepared, tmp_path):
    config = tiny_config(prepared, limit_per_class=4)
    straight = train(config, tmp_path / "straight", progress=False)

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == (2, 1):
            raise KeyboardInterrupt

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(config, run, progress=False, step_callback=interrupt)
    assert not (run / "summary.json").exists() and len(read_history(run)) == 1
    assert read_checkpoint(run / "checkpoints" / "last.pt")["extra"]["step"] == 1
    with pytest.raises(BrainMRIError, match="already exists"):
        train(config, run, progress=False)

    train(config, run, resume=True, progress=False)
    timing = {"seconds", "val_seconds", "images_per_second"}
    a = [{k: v for k, v in row.items() if k not in timing} for row in read_history(straight)]
    b = [{k: v for k, v in row.items() if k not in timing} for row in read_history(run)]
    assert len(b) == 2 and a == b
    weights = [read_checkpoint(r / "checkpoints" / "last.pt")["model_state"] for r in (straight, run)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same model, bit for bit
    assert "resumed" in (run / "train.log").read_text()
    assert len(json.loads((run / "environment.json").read_text())["resumed"]) == 1  # both sessions recorded
    with pytest.raises(BrainMRIError, match="already finished"):
        train(config, run, resume=True, progress=False)


def test_an_interrupt_inside_a_step_keeps_the_last_whole_state(prepared, tmp_path, monkeypatch):
    """A second Ctrl-C can land inside the optimiser step; saving then would store half an update."""
    import brainmri.training.loop as train_module

    real_step, calls = train_module.train_step, []

    def step_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 2, during its first step (2 steps an epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_then_stop)
    from brainmri.training import run as training_run

    monkeypatch.setattr(training_run, "CHECKPOINT_EVERY_SECONDS", 0.0)  # last.pt after every epoch
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(prepared, limit_per_class=4), run, progress=False)
    last = read_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["extra"]["step"]) == (1, 0)  # the end of epoch 1, not a torn step
    assert "kept the last saved state" in (run / "train.log").read_text()


def test_loader_workers_and_relative_paths_do_not_change_a_run(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(prepared.parent)
    config = tiny_config(Path(prepared.name), limit_per_class=4, epochs=1)
    inline = train(config, tmp_path / "inline", progress=False)
    workers = train(config.replace(workers=1), tmp_path / "workers", progress=False)
    timing = {"seconds", "val_seconds", "images_per_second"}
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in read_history(x)] for x in (inline, workers)]
    assert rows[0] == rows[1]  # dropout is keyed by the step, not by how batches were made
    assert json.loads((inline / "config.json").read_text())["data"] == str(prepared.resolve())


def test_best_checkpoint_reloads_and_reproduces_its_validation_metrics(prepared, tmp_path):
    run = train(tiny_config(prepared, val_size=0.3), tmp_path / "val", progress=False)
    model, card = load_model(run / "checkpoints" / "best.pt")
    x, y, _ = load_split(prepared, run / "split.csv", "val", size=card["image_size"])
    s = score(model, x, y)
    loss, correct, n = s["loss_sum"], s["correct"], s["n"]
    best = card["metrics"]
    row = read_history(run)[best["epoch"] - 1]
    # history.csv keeps 6 significant digits (1/3 is 0.333333 there): compared at that precision
    assert correct / n == pytest.approx(float(row["val_acc"]), rel=1e-5)
    assert correct / n == pytest.approx(best["val_acc"])
    assert loss / n == pytest.approx(best["val_loss"], rel=1e-4)
    again, _ = load_model(run)
    with torch.no_grad():
        assert torch.equal(model(x[:4].float() / 255), again(x[:4].float() / 255))


def test_history_records_what_validation_costs_in_the_epochs_that_validate(prepared, tmp_path):
    """``val_every 2`` over 3 epochs validates epochs 2 and 3 (the last always): only those
    carry validation seconds, so that the cost of validating can be read off any run."""
    run = train(tiny_config(prepared, val_size=0.3, epochs=3, val_every=2), tmp_path / "v", progress=False)
    rows = read_history(run)
    assert [r["val_acc"] != "" for r in rows] == [False, True, True]
    assert float(rows[0]["val_seconds"]) == 0.0
    assert all(0.0 < float(r["val_seconds"]) < float(r["seconds"]) for r in rows[1:])


def test_the_last_epoch_is_kept_and_the_test_side_chooses_nothing(trained_run):
    """The paper's protocol: a fixed number of epochs, then the final model. Choosing the epoch
    on the test side would bias every test metric upwards."""
    best = read_checkpoint(trained_run / "checkpoints" / "best.pt")
    last = read_checkpoint(trained_run / "checkpoints" / "last.pt")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert best["epoch"] == last["epoch"] == summary["epochs"] == best["card"]["metrics"]["epoch"]
    assert all(torch.equal(best["model_state"][k], v) for k, v in last["model_state"].items())
    assert best["card"]["split"]["selection"] == summary["selection"] and "last epoch" in summary["selection"]
    assert best["card"]["prepared_size"] == 64  # inference resizes through it, as training did


def test_a_validation_side_from_training_chooses_the_epoch_and_the_test_side_is_untouched(prepared, tmp_path):
    config = tiny_config(prepared, val_size=0.25, limit_per_class=None, epochs=2)
    run = train(config, tmp_path / "val", progress=False)
    rows = [{k: r[k] for k in ("path", "side")} for r in csv.DictReader((run / "split.csv").open())]
    plain = splits.make_split(prepared, config.test_size, config.seed)
    assert {r["path"] for r in rows if r["side"] == "test"} == {r["path"] for r in plain if r["side"] == "test"}
    val = [r["path"] for r in rows if r["side"] == "val"]
    assert val and set(val) < {r["path"] for r in plain if r["side"] == "train"}
    x, y, _ = load_split(prepared, run / "split.csv", "val", size=config.image_size)
    ckpt = read_checkpoint(run / "checkpoints" / "best.pt")
    card, history = ckpt["card"], read_history(run)
    assert card["split"]["val"] == len(val) and "val side" in card["metrics"]["split"]
    best_row = max(history, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"])))
    assert card["metrics"]["epoch"] == int(best_row["epoch"]) == ckpt["epoch"]
    model, _ = load_model(run)
    s = score(model, x, y)
    correct, n = s["correct"], s["n"]
    assert n == len(val) and correct / n == pytest.approx(float(best_row["val_acc"]))
    assert "validation images carved from training" in (run / "train.log").read_text()


def _patient_csv(prepared: Path, path: Path) -> Path:
    """Made-up patients of three slices each (per class, in file order)."""
    rows = sorted(data.read_manifest(prepared), key=lambda r: r["source_path"])
    lines = [f"{r['source_path']},{r['label']}-{i // 3}" for i, r in enumerate(rows)]
    path.write_text("file,group\n" + "\n".join(lines) + "\n")
    return path


def test_a_run_split_by_patient_says_so_in_its_card(prepared, tmp_path, monkeypatch):
    groups = _patient_csv(prepared, tmp_path / "patients.csv")
    monkeypatch.chdir(tmp_path)
    run = train(tiny_config(prepared, groups="patients.csv", epochs=1), tmp_path / "runs" / "p", progress=False)
    card = read_checkpoint(run / "checkpoints" / "best.pt")["card"]
    assert card["split"]["level"] == "patient" and card["split"]["groups"] == str(groups.resolve())
    assert card["limitations"].startswith("Images are split by the given patient groups")
    assert json.loads((run / "config.json").read_text())["groups"] == str(groups.resolve())
    assert all(r["group"].startswith("patient:") for r in csv.DictReader((run / "split.csv").open()))
    plain = read_checkpoint(Path(prepared).parent / "runs" / "resnet18" / "checkpoints" / "best.pt")["card"]
    assert plain["split"]["level"] == "duplicate group"


@pytest.mark.slow
def test_a_comparison_split_by_patient_states_it_in_its_report(prepared, tmp_path):
    groups = _patient_csv(prepared, tmp_path / "patients.csv")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(prepared), "--out", str(out), "--archs", "resnet18", "--weights", "none"]
    args += ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--bootstrap", "20", "--no-progress"]
    assert main([*args, "--groups", str(groups)]) == 0
    md = (out / "report.md").read_text()
    assert f"Split level: patient (every group of {groups.resolve()}" in md
    assert "Images are not split by patient" not in md
    sides: dict[str, set[str]] = {}
    for r in csv.DictReader((out / "split.csv").open()):
        sides.setdefault(r["group"], set()).add(r["side"])
    assert all(g.startswith("patient:") and len(s) == 1 for g, s in sides.items())


def test_limit_per_class_takes_a_seeded_random_subset_of_each_class_and_side(prepared):
    from brainmri.data.splits import effective_split as _effective_split

    full = _effective_split(tiny_config(prepared, limit_per_class=None))
    limited = _effective_split(tiny_config(prepared, limit_per_class=4))
    assert limited == _effective_split(tiny_config(prepared, limit_per_class=4))
    assert limited != _effective_split(tiny_config(prepared, limit_per_class=4, seed=1))
    assert all(r in full for r in limited)
    first_by_name = []
    for side in ("train", "test"):
        for label in CLASSES:
            pool = sorted(r["path"] for r in full if (r["side"], r["label"]) == (side, label))
            picked = sorted(r["path"] for r in limited if (r["side"], r["label"]) == (side, label))
            assert len(picked) == min(4, len(pool))
            first_by_name.append(picked == pool[: len(picked)])
    assert not all(first_by_name), "the limit must not just take the first files by name"


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_write_one_run(prepared, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "brainmri", "train", "--data", str(prepared), "--arch", "resnet18", "--weights", "none",
        "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--limit-per-class", "4",
        "--device", "cpu", "--runs-dir", str(tmp_path), "--name", "ddp", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    assert len(read_history(tmp_path / "ddp")) == 1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
    assert done.stdout.strip().splitlines() == [str(tmp_path / "ddp")]


def test_cli_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.5\narch: resnet101\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "2", "--hflip"])
    config = train_config_from_args(args)
    assert (config.epochs, config.lr, config.arch, config.hflip) == (2, 0.5, "resnet101", True)
    assert (config.batch_size, config.image_size, config.weights) == (32, 256, "imagenet")
    (tmp_path / "bad.json").write_text('{"epochz": 3}')
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "bad.json")])
    with pytest.raises(BrainMRIError, match="unknown config keys: epochz"):
        train_config_from_args(args)
    (tmp_path / "typed.json").write_text('{"epochs": "ten"}')
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    for name, message in (
        ("typed.json", "config key 'epochs' must be int, got 'ten'"),
        ("binary.yaml", "not a UTF-8 text file"),
        ("broken.yaml", "is not valid yaml"),
    ):
        args = build_parser().parse_args(["train", "--config", str(tmp_path / name)])
        with pytest.raises(BrainMRIError, match=message) as err:
            train_config_from_args(args)
        assert "\n" not in str(err.value)
    assert TrainConfig.from_dict({"lr": 1, "limit_per_class": None}).lr == 1.0


def test_cli_user_errors_exit_2_and_never_touch_an_existing_run(trained_run, tmp_path, capsys):
    before = (trained_run / "history.csv").read_text()
    common = ["--runs-dir", str(trained_run.parent), "--name", trained_run.name]
    data = json.loads((trained_run / "config.json").read_text())["data"]
    for bad in (["--val-size", "1.5"], ["--image-size", "4"], ["--weights", str(tmp_path / "none.pt")]):
        assert main(["train", "--data", data, *common, "--overwrite", *bad]) == 2  # refused before replacing
        assert capsys.readouterr().err.count("\n") == 1
        assert (trained_run / "history.csv").read_text() == before
    assert main(["train", "--data", str(tmp_path), *common]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--resume", *common]) == 2
    assert "already finished" in capsys.readouterr().err
    assert (trained_run / "history.csv").read_text() == before
    assert main(["train", "--data", str(tmp_path / "missing"), "--runs-dir", str(tmp_path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "prepared data folder not found" in err and err.count("\n") == 1


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(prepared, tmp_path):
    import shutil

    broken = tmp_path / "prepared"
    shutil.copytree(prepared, broken)
    png = next((broken / "glioma_tumor").glob("*.png"))
    png.write_bytes(png.read_bytes()[:100])  # truncated: found only when training loads the data
    config = tiny_config(broken, limit_per_class=None)
    with pytest.raises(BrainMRIError, match=png.name):
        train(config, tmp_path / "runs" / "x", progress=False)
    assert not (tmp_path / "runs" / "x").exists()  # the retry needs no --overwrite


def test_compare_refuses_bad_settings_before_recording_them(prepared, tmp_path, capsys):
    out = tmp_path / "cmp"
    for flags, message in ((["--epochs", "0"], "--epochs must be at least 1"), (["--weights", "nope.pt"], "not found")):
        assert main(["compare", "--data", str(prepared), "--out", str(out), "--archs", "resnet18", *flags]) == 2
        assert message in capsys.readouterr().err
        assert not (out / "comparison.json").exists()  # a corrected rerun must not be refused


def test_a_comparison_resumes_only_on_the_same_data_and_restarts_if_nothing_ran(prepared, tmp_path):
    from brainmri.experiments.compare import COMPARISON_JSON, _check_settings, _settings

    settings = _settings(prepared, TrainConfig(), None, 0.2)
    other_data = {**settings, "prepared_manifest_sha256": "0" * 64}  # same folder, prepared from other data
    out = tmp_path / "cmp"
    out.mkdir()
    (out / COMPARISON_JSON).write_text(json.dumps({"settings": other_data}))
    (out / "split.csv").write_text("stale")
    _check_settings(out, settings)  # no run had started: begin again, without the stale split
    assert not (out / COMPARISON_JSON).exists() and not (out / "split.csv").exists()
    (out / COMPARISON_JSON).write_text(json.dumps({"settings": other_data}))
    (out / "runs" / "resnet18" / "checkpoints").mkdir(parents=True)
    (out / "runs" / "resnet18" / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(BrainMRIError, match=r"other settings \(prepared data\)"):
        _check_settings(out, settings)
    older = {**settings, "config": {k: v for k, v in settings["config"].items() if k != "val_size"}}
    (out / COMPARISON_JSON).write_text(json.dumps({"settings": older}))
    with pytest.raises(BrainMRIError, match="older brainmri, whose runs chose their best epoch on the test side"):
        _check_settings(out, settings)


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(BrainMRIError, match="needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(BrainMRIError, match="unknown precision"):
        resolve_precision("fp8", cpu)


def test_oversampling_balances_each_epoch_and_class_weights_are_balanced():
    labels = torch.tensor([0] * 6 + [1] * 6 + [2] * 5 + [3] * 2)
    order = epoch_order(labels, "oversample", seed=1, epoch=1)
    assert torch.bincount(labels[order]).tolist() == [6, 6, 6, 6]
    assert set(order.tolist()) == set(range(len(labels)))
    assert not torch.equal(order, epoch_order(labels, "oversample", seed=1, epoch=2))
    assert torch.equal(order, epoch_order(labels, "oversample", seed=1, epoch=1))
    assert sorted(epoch_order(labels, "none", seed=1, epoch=1).tolist()) == list(range(len(labels)))
    weights = class_weights(labels)
    assert torch.allclose(weights * torch.bincount(labels), torch.full((4,), len(labels) / 4))


def test_batch_augmentation_matches_torchvision_affine_per_image():
    config = TrainConfig(hflip=True)
    torch.manual_seed(0)
    batch = torch.rand(6, 1, 40, 32)
    params = sample_params(6, config.augment_section(), (40, 32), torch.Generator().manual_seed(2))
    theta = affine_matrices(params, (40, 32))
    grid = torch.nn.functional.affine_grid(theta, [6, 1, 40, 32], align_corners=False)
    ours = torch.nn.functional.grid_sample(batch, grid, align_corners=False)
    for i in range(6):
        ref = TF.affine(
            batch[i],
            angle=float(params["angle"][i]),
            translate=[float(params["tx"][i]), float(params["ty"][i])],
            scale=float(params["scale"][i]),
            shear=[float(params["shear"][i]), 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        if params["flip"][i]:
            ref = TF.horizontal_flip(ref)
        assert torch.allclose(ours[i], ref, atol=1e-4)


def test_augmenter_on_uint8_batches():
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    plain = make_augmenter(TrainConfig(augment=False).augment_section())(images)
    assert plain.dtype == torch.float32 and torch.equal(plain, images.float() / 255)
    augment = make_augmenter(TrainConfig().augment_section())
    a = augment(images, generator=torch.Generator().manual_seed(1))
    b = augment(images, generator=torch.Generator().manual_seed(1))
    c = augment(images, generator=torch.Generator().manual_seed(2))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0
    with pytest.raises(BrainMRIError, match="zoom"):
        make_augmenter(TrainConfig(zoom=1.5).augment_section())


def test_missing_imagenet_weights_fail_before_a_run_folder_is_written(prepared, tmp_path, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(BrainMRIError, match="--weights none"):
        train(tiny_config(prepared, weights="imagenet"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_last_checkpoint_is_written_when_due_and_after_the_last_epoch(prepared, tmp_path, monkeypatch):
    """last.pt is not rewritten after every short epoch: only once the interval has passed, and
    always after the last epoch (an interruption saves too, tested above)."""
    from brainmri.training import run as training_run

    seen: dict[int, bool] = {}
    run = tmp_path / "run"

    def look(epoch: int, step: int) -> None:
        if step == 1:
            seen[epoch] = (run / "checkpoints" / "last.pt").is_file()

    monkeypatch.setattr(training_run, "CHECKPOINT_EVERY_SECONDS", 1e9)
    train(tiny_config(prepared, epochs=3, limit_per_class=4), run, progress=False, step_callback=look)
    assert seen == {1: False, 2: False, 3: False}
    assert read_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3

    monkeypatch.setattr(training_run, "CHECKPOINT_EVERY_SECONDS", 0.0)
    seen.clear()
    run = tmp_path / "every"
    train(tiny_config(prepared, epochs=2, limit_per_class=4), run, progress=False, step_callback=look)
    assert seen == {1: False, 2: True}
