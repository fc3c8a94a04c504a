"""Settings: every value checked in one place (one line naming the setting, whoever gave it),
and the parts of training called with their own section of the config, not the whole."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from brainmri.cli.args import train_config_from_args
from brainmri.cli.command import build_parser, main
from brainmri.config import AugmentSettings, LoopSettings, OptimSettings, SamplingSettings, TrainConfig
from brainmri.errors import BrainMRIError
from brainmri.training import augment, loop, optim, sampling

#: Bad settings as a config file writes them, as flags, and as Python arguments: the same problem
#: three ways, and the line each must give.
BAD = [
    ("zoom: 1.5", ["--zoom", "1.5"], {"zoom": 1.5}, "--zoom must be at least 0 and below 1, got 1.5"),
    ("lr: -1", ["--lr", "-1"], {"lr": -1}, "--lr must be above 0, got -1.0"),
    ("image_size: 4", ["--image-size", "4"], {"image_size": 4}, "--image-size must be at least 8 and at most 2048"),
    ("rotation: .nan", ["--rotation", "nan"], {"rotation": float("nan")}, "--rotation must be a finite number"),
    (
        "schedule: onecycle\nwarmup: 0",
        ["--schedule", "onecycle", "--warmup", "0"],
        {"schedule": "onecycle", "warmup": 0},
        "--schedule onecycle needs a warm-up",
    ),
    ("progressive: '64:2'", ["--progressive", "64:2"], {"progressive": "64:2"}, "--progressive '64:2': sizes from"),
    ("fold: 1", ["--fold", "1"], {"fold": 1}, "--fold needs --split FILE"),
]


@pytest.mark.parametrize(("yaml_text", "flags", "kwargs", "message"), BAD, ids=[b[3].split()[0] for b in BAD])
def test_a_bad_value_is_the_same_line_from_a_file_the_flags_and_python(
    yaml_text, flags, kwargs, message, tmp_path, capsys
):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text + "\n")
    common = ["--data", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    errors = []
    for argv in (["train", "--config", str(config), *common], ["train", *flags, *common]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("brainmri: error: ") and err.count("\n") == 1, err
        errors.append(err.removeprefix("brainmri: error: ").strip())
    with pytest.raises(BrainMRIError) as api:
        TrainConfig(**kwargs)
    errors.append(str(api.value))
    assert errors[0] == errors[1] == errors[2], errors
    assert message in errors[0] and "\n" not in errors[0]
    assert "validation error" not in errors[0] and "pydantic" not in errors[0]  # never pydantic's report
    assert not (tmp_path / "runs").exists()


def test_a_config_is_checked_whenever_it_is_made_and_cannot_be_changed_after():
    config = TrainConfig()
    for make in (lambda: config.replace(zoom=1.5), lambda: TrainConfig.from_dict({"zoom": 1.5})):
        with pytest.raises(BrainMRIError, match="--zoom must be"):
            make()
    with pytest.raises(BrainMRIError, match="config key 'epochs' must be int, got 'ten'"):
        TrainConfig(epochs="ten")  # type: ignore[arg-type]
    with pytest.raises(BrainMRIError, match="config key 'hflip' must be bool, got 1"):
        TrainConfig(hflip=1)  # type: ignore[arg-type]  # no silent truthiness
    with pytest.raises(BrainMRIError, match="unknown --optimizer 'lamb'; choose one of adam, adamw, sgd"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


def test_older_config_files_still_load():
    """config.json of runs written by older versions (fewer fields, ints for floats) and the
    committed configs load, and say what they said."""
    files = sorted((ROOT / "docs" / "results").glob("**/config.json")) + sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for path in files:
        if path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            import yaml

            values = yaml.safe_load(path.read_text())
        config = TrainConfig.from_dict(values)
        assert {k: getattr(config, k) for k in values} == values, path
    old = {"data": "/d", "arch": "resnet50", "epochs": 10, "lr": 1, "test_size": 0.2, "augment": True, "seed": 42}
    config = TrainConfig.from_dict(old)
    assert (config.lr, config.crop, config.progressive) == (1.0, 1.0, "")


def test_the_leaf_modules_need_only_their_section():
    """optim, sampling, augment and the loop never see a TrainConfig: each is called here with
    a section made by hand, and none of them imports the class."""
    for module in (optim, sampling, augment, loop):
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "TrainConfig" not in names, module.__name__

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 4),
    )  # fmt: skip
    opt_settings = OptimSettings("sgd", lr=0.1, weight_decay=0.01, momentum=0.9, schedule="cosine", warmup=0.25)
    optimizer = optim.build_optimizer(model, opt_settings)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["weight_decay"] == 0.01
    scheduler = optim.build_scheduler(optimizer, opt_settings, total_steps=8)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / optim.WARMUP_DIVISOR)
    del scheduler

    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4 + [3] * 4)
    sample_settings = SamplingSettings(batch_size=4, balance="oversample", seed=3)
    batches = sampling.epoch_batches(labels, sample_settings, epoch=1, rank=0, world_size=1)
    assert sum(len(b) for b in batches) == 4 * 6  # every class raised to the largest
    assert sampling.steps_per_epoch(labels, sample_settings) == len(batches) == 6

    aug_settings = AugmentSettings(augment=True, rotation=10, shift=0.1, zoom=0.1, shear=5, hflip=True, crop=0.8)
    images = torch.randint(0, 255, (len(labels), 1, 16, 16), dtype=torch.uint8)
    out = augment.make_augmenter(aug_settings)(images[:4], generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 16, 16) and out.dtype == torch.float32

    settings = LoopSettings(
        optim=opt_settings, sampling=sample_settings, augment=aug_settings, epochs=2, image_size=16,
        progressive=((12, 0.5),), seed=3, label_smoothing=0.1, ema=0.0, channels_last=False, workers=0, tta=False,
        eval_precision="fp32",
    )  # fmt: skip
    assert (settings.epoch_size(1), settings.epoch_size(2)) == (12, 16)  # epoch 1 trains downscaled
    device = torch.device("cpu")
    parts = loop.build_parts(model, settings, labels, "fp32", device)
    totals = loop.train_one_epoch(parts, loop.TrainState(), images, labels, 1, settings, device)
    assert totals["seen"] == 24 and totals["loss"] > 0
    scores = loop.validate(parts.evaluated, images, labels, settings, "fp32", device)
    assert scores["n"] == len(labels)


def test_the_loop_section_carries_the_config_values():
    config = TrainConfig(epochs=10, image_size=128, progressive="64:0.4,96:0.3", balance="class_weights", seed=7)
    section = config.loop_section()
    assert [section.epoch_size(e) for e in range(1, 11)] == [config.epoch_size(e) for e in range(1, 11)]
    assert section.sampling == SamplingSettings(config.batch_size, "class_weights", 7)
    assert section.optim == config.optim_section() and section.augment == config.augment_section()


def test_no_progressive_resizing_has_one_value_however_it_is_spelt():
    """``none`` (as ``reproduce --progressive none`` and the recorded commands say) and '' are
    the same setting: the same config, the same config.json, every epoch at --image-size."""
    plain = TrainConfig(epochs=4, image_size=64, progressive="")
    for spelt in ("none", "None", " NONE "):
        assert TrainConfig(epochs=4, image_size=64, progressive=spelt) == plain
        assert TrainConfig.from_dict({"epochs": 4, "image_size": 64, "progressive": spelt}).to_dict() == plain.to_dict()
    args = build_parser().parse_args(["train", "--epochs", "4", "--image-size", "64", "--progressive", "none"])
    assert train_config_from_args(args) == plain
    assert [plain.epoch_size(e) for e in range(1, 5)] == [64] * 4
    with pytest.raises(BrainMRIError, match="--progressive 'nothing'"):
        TrainConfig(progressive="nothing")
