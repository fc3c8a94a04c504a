"""The recipe that trains from scratch: learning-rate schedules against their formulas, weight
decay kept off norms and biases, exact resume mid-schedule with a weight average, the split
policies, external validation in a comparison and the failure gallery."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from brainmri.cli.command import main
from brainmri.config import TrainConfig
from brainmri.data import prepare as preparation
from brainmri.data import prepared as data
from brainmri.data import splitfile
from brainmri.data.splits import crossing_groups, effective_split
from brainmri.errors import BrainMRIError
from brainmri.models.checkpoint import read_checkpoint
from brainmri.training import optim
from brainmri.training.run import train


def _lrs(config: TrainConfig, total: int) -> list[float]:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = optim.build_optimizer(model, config.optim_section())
    scheduler = optim.build_scheduler(optimizer, config.optim_section(), total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_then_constant_or_cosine_follow_their_formula(schedule):
    lr, total, warmup = 0.01, 100, 0.1
    lrs = _lrs(TrainConfig(schedule=schedule, lr=lr, warmup=warmup), total)
    warm = 10
    for step in (0, 5, 9):  # linear from lr/25 to lr
        assert lrs[step] == pytest.approx(lr * (1 / 25 + (1 - 1 / 25) * step / warm))
    for step in (10, 40, 75, 99):
        expected = 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert lrs[step] == pytest.approx(lr * expected)
    assert lrs[-1] < 0.001 * lr if schedule == "cosine" else lrs[-1] == pytest.approx(lr)


def test_onecycle_warms_up_to_the_peak_then_anneals_as_torch_defines_it():
    lr, total, pct = 0.002, 200, 0.2
    lrs = _lrs(TrainConfig(schedule="onecycle", lr=lr, warmup=pct), total)
    up = pct * total - 1  # torch's OneCycleLR: the peak is reached at step pct * total - 1
    start, end = lr / 25, lr / 25 / 1e4

    def cos(a: float, b: float, t: float) -> float:
        return b + (a - b) / 2 * (math.cos(math.pi * t) + 1)

    for step in (0, 10, 39):
        assert lrs[step] == pytest.approx(cos(start, lr, step / up))
    for step in (40, 120, 199):
        assert lrs[step] == pytest.approx(cos(lr, end, (step - up) / (total - 1 - up)))
    assert max(lrs) == pytest.approx(lr)
    with pytest.raises(BrainMRIError, match="needs a warm-up"):
        TrainConfig(schedule="onecycle", warmup=0.0).check()


@pytest.mark.parametrize(("total", "pct"), [(5, 0.2), (10, 0.1), (4, 0.25), (6, 0.2)])
def test_onecycle_on_a_run_of_a_few_steps_still_warms_up_then_anneals(total, pct):
    # A warm-up of exactly one step made torch's OneCycleLR divide by zero (a tiny --epochs 1
    # run): such a run must train, peak once, and end below where it started.
    lr = 0.002
    lrs = _lrs(TrainConfig(schedule="onecycle", lr=lr, warmup=pct), total)
    assert len(lrs) == total and all(0 < v <= lr * (1 + 1e-9) for v in lrs)
    peak = lrs.index(max(lrs))
    assert lrs[0] < max(lrs) and lrs[-1] < lrs[0] and 0 < peak < total - 1


def test_weight_decay_skips_norm_layers_and_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Linear(4, 3))
    for name in ("adam", "adamw", "sgd"):
        optimizer = optim.build_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.05).optim_section())
        decayed, plain = optimizer.param_groups
        assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
        assert {tuple(p.shape) for p in decayed["params"]} == {(2, 1, 3, 3), (3, 4)}
        assert all(p.ndim == 1 for p in plain["params"]) and len(plain["params"]) == 4  # 2 biases, BN weight+bias


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_optimizer_makes_the_same_updates_as_the_loop(name):
    """--fused-optimizer changes how the update runs, not what it computes: after a few steps on
    the same gradients the weights agree to rounding (and differ from the start), and the
    option round-trips through a saved config."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(6, 3))]
    models.append(copy.deepcopy(models[0]))
    start = [p.detach().clone() for p in models[0].parameters()]
    settings = [TrainConfig(optimizer=name, lr=1e-2, weight_decay=0.05, fused_optimizer=f) for f in (False, True)]
    optimizers = [optim.build_optimizer(m, s.optim_section()) for m, s in zip(models, settings, strict=True)]
    assert not optimizers[0].defaults.get("fused") and optimizers[1].defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(p) for p in start]
        for model, optimizer in zip(models, optimizers, strict=True):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for loop, fused, before in zip(models[0].parameters(), models[1].parameters(), start, strict=True):
        assert not torch.equal(loop, before)
        torch.testing.assert_close(fused, loop, rtol=1e-5, atol=1e-6)
    again = TrainConfig.from_dict(json.loads(json.dumps(settings[1].to_dict())))
    assert again.fused_optimizer is True and again.optim_section() == settings[1].optim_section()
    assert TrainConfig.from_dict({}).fused_optimizer is False  # a config saved before the option existed


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_resume_mid_schedule_with_a_weight_average_gives_the_uninterrupted_run(trained_run, tmp_path):
    prepared = json.loads((trained_run / "config.json").read_text())["data"]
    config = TrainConfig(
        data=prepared, arch="resnet18", weights="none", epochs=3, batch_size=8, image_size=32, limit_per_class=6,
        deterministic=True, precision="fp32", device="cpu", optimizer="adamw", weight_decay=0.05,
        schedule="onecycle", lr=2e-3, warmup=0.3, label_smoothing=0.1, ema=0.9, hflip=True, tta=True,
        zero_init_residual=True,
    )  # fmt: skip
    straight = train(config, tmp_path / "straight", progress=False)

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == (2, 1):
            raise KeyboardInterrupt

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(config, run, progress=False, step_callback=interrupt)
    saved = read_checkpoint(run / "checkpoints" / "last.pt")["extra"]
    assert saved["step"] == 1 and saved["scheduler"]["last_epoch"] > 0 and saved["ema"] is not None
    train(config, run, resume=True, progress=False)
    assert _history(run) == _history(straight)
    lrs = [float(r["lr"]) for r in _history(run)]
    assert lrs[0] > lrs[-1] and len(set(lrs)) == 3  # the schedule moved, and resumed where it was
    for name in ("best.pt", "last.pt"):
        a, b = (read_checkpoint(r / "checkpoints" / name)["model_state"] for r in (straight, run))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    best = read_checkpoint(run / "checkpoints" / "best.pt")
    last = read_checkpoint(run / "checkpoints" / "last.pt")
    # best.pt holds the weight average (what was validated), last.pt the raw weights for resuming.
    assert not all(torch.equal(best["model_state"][k], last["model_state"][k]) for k in best["model_state"])
    assert best["card"]["tta"] == "hflip"


# --- split policies ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duplicated(sartaj, tmp_path_factory) -> Path:
    """A prepared folder whose source holds many exact copies, half of them under Testing/."""
    src = tmp_path_factory.mktemp("dup_src")
    for split in ("Training", "Testing"):
        for folder in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
            (src / split / folder).mkdir(parents=True)
    for folder in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        for f in sorted((sartaj / "Training" / folder).iterdir())[:10]:
            shutil.copy2(f, src / "Training" / folder / f.name)
            shutil.copy2(f, src / "Training" / folder / f"copy_{f.name}")
            shutil.copy2(f, src / "Testing" / folder / f.name)
    out = tmp_path_factory.mktemp("dup") / "prepared"
    preparation.prepare(src, out, size=64, workers=1, progress=False)
    return out


def test_random_policy_lets_duplicate_groups_cross_and_group_policy_never_does(duplicated):
    manifest = data.read_manifest(duplicated)
    readable = [r for r in manifest if r["status"] in ("kept", "duplicate", "label_conflict")]
    group = effective_split(TrainConfig(data=str(duplicated)))
    random = effective_split(TrainConfig(data=str(duplicated), split_policy="random"))
    assert crossing_groups(group) == 0
    assert len(random) == len(readable) > len(group)  # every readable file, duplicates kept
    assert crossing_groups(random) > 0
    assert all(Path(r["path"]).is_absolute() for r in random if r["path"] not in {g["path"] for g in group})
    images, labels, _ = data.load_split(duplicated, _write(random, duplicated.parent / "r.csv"), "test", size=32)
    assert images.shape[1:] == (1, 32, 32) and len(labels) == sum(r["side"] == "test" for r in random)


def _write(rows, path: Path) -> Path:
    return splitfile.write_split(rows, path)


# --- comparison: external validation and the failure gallery --------------------------------------------


@pytest.mark.slow
def test_compare_with_external_folders_reports_them_and_the_gallery(duplicated, sartaj, tmp_path):
    external = tmp_path / "other-source"
    for folder, label in (("glioma", "glioma_tumor"), ("notumor", "no_tumor")):
        (external / folder).mkdir(parents=True)
        for f in sorted((sartaj / "Testing" / label).iterdir())[-4:]:
            Image.open(f).convert("L").rotate(90).save(external / folder / f"{f.stem}.png")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(duplicated), "--out", str(out), "--archs", "resnet18", "--weights", "none"]
    args += ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--bootstrap", "50", "--no-progress"]
    args += ["--external", str(external), "--precision", "fp32"]
    assert main(args) == 0
    md = (out / "report.md").read_text()
    assert "## External validation: other-source" in md
    ext = json.loads((out / "runs" / "resnet18" / "eval" / "other-source" / "metrics.json").read_text())
    assert ext["n"] == 8 and ext["classes_evaluated"] == ["glioma_tumor", "normal"]
    assert f"{ext['accuracy']:.3f} (" in md and "runs/resnet18/eval/other-source/confusion_matrix.png" in md
    results = json.loads((out / "results.json").read_text())
    assert results["archs"]["resnet18"]["external"]["other-source"]["n"] == 8

    # The gallery holds exactly the misclassified held-out images.
    with (out / "runs" / "resnet18" / "predictions.csv").open() as fh:
        wrong = {r["path"] for r in csv.DictReader(fh) if r["label"] != r["predicted"]}
    with (out / "runs" / "resnet18" / "figures" / "failures.csv").open() as fh:
        listed = [r["path"] for r in csv.DictReader(fh)]
    assert wrong, "one epoch from scratch cannot classify every held-out image"
    assert len(listed) == len(set(listed)) and set(listed) == wrong
    assert "### Failure gallery: ResNet-18" in md and "runs/resnet18/figures/failures.png" in md
    with Image.open(out / "runs" / "resnet18" / "figures" / "failures.png") as img:
        assert img.format == "PNG"
    # The reporting checklists, numbered as CLAIM 2024 and TRIPOD+AI number their items, fill what
    # the runs recorded and give the reason for what they cannot (tests/test_checklist.py: every item).
    section = md[md.index("## Reporting checklist") : md.index("### ResNet-18")]
    manifest = hashlib.sha256((duplicated / "manifest.csv").read_bytes()).hexdigest()
    assert manifest in section and "random initialisation" in section and "other-source: ResNet-18" in section
    assert "split level duplicate group; checked on split.csv: disjoint" in section
    assert "### CLAIM 2024 (44 items)" in section and "### TRIPOD+AI (27 items, 52 rows)" in section
    assert "| 33 | Testing on external data | reported |" in section
    assert "| 14 | Approaches to model fairness | not available |" in section
    assert "| 39 | Failure analysis of incorrect results | reported | ResNet-18: " in section
    assert "every item is filled" not in section.lower()
    assert main([*args[:-2], "--external", str(tmp_path / "missing")]) == 2


def test_the_config_files_hold_the_presets_settings():
    """configs/scratch.yaml and configs/quick.yaml are what `reproduce --preset` trains with."""
    import yaml

    from brainmri.experiments.reproduce import PRESETS, preset_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("scratch", "quick"):
        values = yaml.safe_load((root / f"{name}.yaml").read_text())
        assert values == PRESETS[name]
        assert TrainConfig.from_dict(values) == preset_config(name)
