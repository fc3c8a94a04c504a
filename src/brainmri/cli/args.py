"""Argument types and the training flags shared by the command groups of the CLI."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from brainmri.errors import BrainMRIError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def int_at_least(low: int):
    """An argparse type: an integer of at least ``low`` (a bad value is a usage error, one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def cpu_count(text: str) -> int:
    """An argparse type: a thread count between 1 and the CPUs this process may use."""
    from brainmri.runtime import usable_cpus

    value, limit = int_at_least(1)(text), usable_cpus()
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be between 1 and {limit} (the CPUs this process may use), got {value}")
    return value


def positive_mb(text: str) -> float:
    """An argparse type: a size in MB above zero and at most the largest image file read
    (:data:`brainmri.io.images.MAX_FILE_BYTES`, 256 MB): an upload is held in memory whole, and
    nan, inf or 1e308 are not sizes (1e308 MB overflowed the byte count)."""
    import math

    from brainmri.io.images import MAX_FILE_BYTES

    most = MAX_FILE_BYTES // 2**20
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= most:
        raise argparse.ArgumentTypeError(f"must be a number of MB above 0 and at most {most}, got {text!r}")
    return value


def add_groups_flags(p: argparse.ArgumentParser, what: str) -> None:
    from brainmri.config import GROUPS_MISSING

    p.add_argument(
        "--groups",
        metavar="FILE",
        help=f"CSV of file,group (e.g. a patient ID; file relative to SRC, as the manifest's source_path): {what}",
    )
    p.add_argument(
        "--groups-missing",
        choices=GROUPS_MISSING,
        default="error",
        help="files the --groups CSV lacks: error (default) or singleton (each its own group)",
    )


def add_training_flags(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """One flag per :class:`TrainConfig` field, generated from its metadata (help, choices),
    so that ``train`` and ``compare`` cannot drift apart. Unset flags stay out of the
    namespace: flags > --config file > defaults."""
    import typing

    from brainmri.config import TrainConfig, cli_fields

    hints = typing.get_type_hints(TrainConfig)
    for f in cli_fields():
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        kind = next((k for k in typing.get_args(hints[f.name]) if k is not type(None)), hints[f.name])
        options: dict = {"default": argparse.SUPPRESS, "help": meta["help"]}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if meta.get("choices"):
                options["choices"] = meta["choices"]
            if meta.get("metavar"):
                options["metavar"] = meta["metavar"]
        p.add_argument(flag, dest=f.name, **options)


def train_config_from_args(args: argparse.Namespace, base: dict | None = None):
    """TrainConfig from defaults (or ``base``, a preset), then the --config file, then the
    flags actually given."""
    from brainmri.config import TrainConfig, cli_fields, load_config_file

    values = TrainConfig().to_dict()
    values.update(base or {})
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    names = {f.name for f in cli_fields()}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return TrainConfig.from_dict(values)


def arch_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    archs = [a.strip() for a in text.split(",") if a.strip()]
    if not archs:
        raise BrainMRIError("--archs is empty; give e.g. resnet50,resnet101,resnet152")
    return archs
