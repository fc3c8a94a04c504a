"""Settings: every value checked in one place (one line naming the setting, whoever gave it)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import ROOT

from brainmri.cli.command import main
from brainmri.config import TrainConfig
from brainmri.errors import BrainMRIError

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
