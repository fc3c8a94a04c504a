"""Training configuration: the paper's settings as defaults, every one overridable.

Each field carries its command-line help, its choices and its range as metadata, so that
``brainmri train`` and ``brainmri compare`` generate the same flags from this one class and
every setting is checked once, here (:meth:`TrainConfig.check`), whoever built the config: a
flag, a config file, a notebook. The effective configuration is saved as ``config.json`` in
each run folder; a JSON (or YAML) file in the same shape can be passed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainmri.errors import BrainMRIError
from brainmri.files import MAX_SHOWN_CHARS, brief

#: What trains: the whole network (the paper), the head only, or the last stage and the head.
FINETUNE_MODES = ("full", "head", "last")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BALANCE_MODES = ("oversample", "class_weights", "none")
#: How the train/test split is drawn: whole duplicate (or patient) groups on one side, or the
#: paper's stratified random split of every readable file, duplicates kept.
SPLIT_POLICIES = ("group", "random")
#: Image sizes a model may have: training refuses others, and a model card outside them is
#: damaged or crafted (inference would allocate tens of gigabytes for one slice).
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 2048
#: What a split does with a file that the ``--groups`` CSV does not name.
GROUPS_MISSING = ("error", "singleton")
#: The default warm-up of each schedule, as a fraction of all steps (OneCycle: torch's 0.3).
DEFAULT_WARMUP = {"constant": 0.0, "cosine": 0.0, "onecycle": 0.3}


@dataclass(frozen=True)
class OptimSettings:
    """What the optimiser and its schedule read of a config (:mod:`brainmri.training.optim`)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    schedule: str
    warmup: float  # the fraction in use: the given one or the schedule's default


@dataclass(frozen=True)
class SamplingSettings:
    """What each epoch's order and batches read (:mod:`brainmri.training.sampling`)."""

    batch_size: int
    balance: str
    seed: int


@dataclass(frozen=True)
class AugmentSettings:
    """What batch augmentation reads (:mod:`brainmri.training.augment`)."""

    augment: bool
    rotation: float
    shift: float
    zoom: float
    shear: float
    hflip: bool
    crop: float


def _opt(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None, **extra: Any) -> Any:
    """A field with its CLI help, choices and range in its metadata.

    ``low``/``high`` bound the value (inclusive unless ``open_low``/``open_high``); ``flag``
    False keeps a field off the command line (it is set by other means).
    """
    meta = {"help": help, "choices": choices, "low": low, **extra}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # data
    data: str = _opt("", "folder made by 'brainmri data prepare'", metavar="PREPARED")
    split: str | None = _opt(None, "split file (default: a new stratified split)", metavar="FILE")
    split_policy: str = _opt(
        "group",
        "how a new split is drawn: group (default; no duplicate group crosses sides) or random (the paper's "
        "way: every readable file, duplicates kept)",
        choices=SPLIT_POLICIES,
    )
    groups: str | None = _opt(
        None,
        "CSV of file,group (e.g. a patient ID; file relative to the source folder, as in the manifest's "
        "source_path): a new split keeps every group, and every duplicate group, on one side",
        metavar="FILE",
    )
    groups_missing: str = _opt(
        "error",
        "files the --groups CSV lacks: error (default) or singleton (each its own group)",
        choices=GROUPS_MISSING,
    )
    test_size: float = _opt(0.2, "test fraction of a new split (0.2)", low=0.0, high=1.0, open_low=True, open_high=True)
    fold: int | None = _opt(None, "held-out fold of a k-fold split file", low=0)
    limit_per_class: int | None = _opt(None, "at most N images per class and side", low=1, metavar="N")
    # Fraction of the training side (whole duplicate groups, per label) held out to choose the
    # best epoch. 0 (the paper): no choice is made, the last epoch is kept, and the per-epoch
    # validation curves are computed on the test side, which never selects anything.
    val_size: float = _opt(
        0.0,
        "fraction of the training side held out to choose the best epoch (0: keep the last epoch, the paper)",
        low=0.0,
        high=1.0,
        open_high=True,
    )
    val_every: int = _opt(
        1,
        "validate every N epochs, and always after the last (1; validation costs a training epoch's time on a CPU)",
        low=1,
        metavar="N",
    )
    # model
    arch: str = _opt("resnet50", "resnet50 (default), resnet101, resnet152 or any torchvision classifier")
    weights: str = _opt("imagenet", "imagenet (default), none, or PATH to a state dict or checkpoint")
    finetune: str = _opt("full", "what trains: full (default), head, last", choices=FINETUNE_MODES)
    zero_init_residual: bool = _opt(
        False, "ResNets from scratch: start each residual branch at zero (its last BatchNorm's scale is 0)"
    )
    # optimisation (the paper: Adam 1e-4, constant, 10 epochs, batch 32, cross-entropy)
    epochs: int = _opt(10, "10", low=1)
    batch_size: int = _opt(32, "32 (per process under torchrun)", low=1)
    optimizer: str = _opt("adam", "adam (default, the paper), adamw or sgd (Nesterov momentum)", choices=OPTIMIZERS)
    lr: float = _opt(1e-4, "learning rate; the peak of a schedule (1e-4)", low=0.0, open_low=True)
    weight_decay: float = _opt(0.0, "weight decay, never on norm layers or biases (0)", low=0.0)
    momentum: float = _opt(0.9, "SGD momentum (0.9)", low=0.0, high=1.0, open_high=True)
    schedule: str = _opt(
        "constant",
        "learning-rate schedule, stepped every batch: constant (default), onecycle, cosine",
        choices=SCHEDULES,
    )
    warmup: float | None = _opt(
        None,
        "fraction of all steps spent warming up linearly from lr/25 (default: 0.3 for onecycle, else 0)",
        low=0.0,
        high=1.0,
        open_high=True,
    )
    label_smoothing: float = _opt(0.0, "label smoothing of the training loss (0)", low=0.0, high=1.0, open_high=True)
    ema: float = _opt(
        0.0,
        "decay of an exponential moving average of the weights, which is then what is validated and kept "
        "(0: none; e.g. 0.998)",
        low=0.0,
        high=1.0,
        open_high=True,
    )
    image_size: int = _opt(256, "256", low=MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE)
    # augmentation (rotation degrees; shifts and zoom as fractions; shear degrees)
    augment: bool = _opt(True, "augment the training images (rotation, shift, zoom, shear)")
    rotation: float = _opt(15.0, "degrees (15)", low=0.0)
    shift: float = _opt(0.1, "fraction of the size (0.1)", low=0.0)
    zoom: float = _opt(0.1, "fraction (0.1)", low=0.0, high=1.0, open_high=True)
    shear: float = _opt(10.0, "degrees (10)", low=0.0, high=90.0, open_high=True)
    hflip: bool = _opt(False, "also flip training images horizontally")
    progressive: str = _opt(
        "",
        "train the first epochs at smaller sizes: SIZE:FRACTION,... of the epochs in order, the rest at --image-size "
        "(e.g. 64:0.4,96:0.3; empty: every epoch at --image-size). Batches are downscaled after augmentation; the "
        "model sees --image-size in its last epochs, at validation and at inference",
        metavar="SPEC",
    )
    crop: float = _opt(
        1.0,
        "random crops of at least this fraction of the image side, scaled back to full size, that cut the "
        "image's edges (1: none; e.g. 0.7 breaks shortcuts at the borders and neck)",
        low=0.1,
        high=1.0,
    )
    tta: bool = _opt(False, "average the probabilities of each image and its mirror image at validation and inference")
    balance: str = _opt(
        "oversample",
        "oversample (paper: extra augmented images of the smaller classes), class_weights or none",
        choices=BALANCE_MODES,
    )
    # execution
    seed: int = _opt(42, "42", low=0)
    deterministic: bool = _opt(False, "identical histories on one machine")
    precision: str = _opt("auto", "training precision: auto (bf16 where native), fp32, bf16, fp16", choices=PRECISIONS)
    eval_precision: str = _opt(
        "fp32",
        "precision of validation and evaluation: fp32 (default, the same numbers on every machine) or auto "
        "(the training precision)",
        choices=("fp32", "auto"),
    )
    device: str = _opt("auto", "auto (GPU if any), cpu, cuda, cuda:N")
    workers: int = _opt(0, "DataLoader processes that augment on the CPU (0)", low=0)
    channels_last: bool = _opt(True, "channels-last memory format")
    tensorboard: bool = _opt(False, "write TensorBoard event files")
    extra: dict[str, Any] = _opt({}, "free-form notes kept with the run", flag=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping (a config file, a run's config.json), each value checked
        against its field's type so that a typo fails here, in one line, not mid-training."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(map(str, set(values) - set(hints)))
        if unknown:
            listed = brief(", ".join(_shown_value(k) if not k.isidentifier() else k for k in unknown))
            raise BrainMRIError(f"unknown config keys: {listed}; known: {', '.join(sorted(hints))}")
        return cls(**{name: _checked(name, value, hints[name]) for name, value in values.items()})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def effective_warmup(self) -> float:
        """The warm-up fraction in use: the given one, or the schedule's default."""
        return DEFAULT_WARMUP[self.schedule] if self.warmup is None else self.warmup

    # Sections: each part of training receives only the settings it reads.

    def optim_section(self) -> OptimSettings:
        return OptimSettings(
            self.optimizer, self.lr, self.weight_decay, self.momentum, self.schedule, self.effective_warmup
        )

    def sampling_section(self) -> SamplingSettings:
        return SamplingSettings(self.batch_size, self.balance, self.seed)

    def augment_section(self) -> AugmentSettings:
        """Checked first when augmenting: the warp is defined only within the fields' ranges,
        and a NaN would silently train a NaN model."""
        if self.augment:
            self.check()
        return AugmentSettings(self.augment, self.rotation, self.shift, self.zoom, self.shear, self.hflip, self.crop)

    def progressive_sizes(self) -> list[tuple[int, float]]:
        """``--progressive`` as (size, fraction of the epochs) pairs, checked."""
        if not self.progressive.strip():
            return []
        out = []
        for part in self.progressive.split(","):
            size, _, fraction = part.strip().partition(":")
            try:
                pair = (int(size), float(fraction))
            except ValueError:
                raise BrainMRIError(
                    f"--progressive {self.progressive!r}: write SIZE:FRACTION,... e.g. 64:0.4,96:0.3"
                ) from None
            if not MIN_IMAGE_SIZE <= pair[0] <= self.image_size or not 0 < pair[1] < 1:
                raise BrainMRIError(
                    f"--progressive {part.strip()!r}: sizes from {MIN_IMAGE_SIZE} to --image-size {self.image_size}, "
                    "fractions between 0 and 1"
                )
            out.append(pair)
        if sum(f for _, f in out) >= 1:
            raise BrainMRIError(f"--progressive {self.progressive!r}: the fractions must leave epochs at --image-size")
        return out

    def epoch_size(self, epoch: int) -> int:
        """The image size epoch ``epoch`` (1-based) trains at under ``--progressive``."""
        done = 0.0
        for size, fraction in self.progressive_sizes():
            done += fraction
            if epoch <= round(done * self.epochs):
                return size
        return self.image_size

    def check(self) -> TrainConfig:
        """Every setting against its choices and range, with the flag's name in the message;
        returns ``self``. Checks that need the file system (data, weights) are the trainer's."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + f.name.replace("_", "-")
            if meta.get("choices") and value not in meta["choices"]:
                raise BrainMRIError(f"unknown {flag} {_shown_value(value)}; choose one of {', '.join(meta['choices'])}")
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            low, high = meta.get("low"), meta.get("high")
            if not math.isfinite(value):
                raise BrainMRIError(f"{flag} must be a finite number, got {value}")
            if low is not None and (value < low or (meta.get("open_low") and value == low)):
                if high is not None:
                    raise BrainMRIError(f"{flag} must be {_range_text(meta)}, got {value}")
                least = "above" if meta.get("open_low") else ("at least" if isinstance(value, int) else ">=")
                raise BrainMRIError(f"{flag} must be {least} {low:g}, got {value}")
            if high is not None and (value > high or (meta.get("open_high") and value == high)):
                raise BrainMRIError(f"{flag} must be {_range_text(meta)}, got {value}")
        if self.groups and self.split_policy == "random":
            raise BrainMRIError(
                "--groups keeps each group on one side, --split-policy random splits image by image: choose one"
            )
        self.progressive_sizes()  # a malformed --progressive is one line here, not mid-training
        if self.schedule == "onecycle" and self.effective_warmup <= 0:
            raise BrainMRIError("--schedule onecycle needs a warm-up: --warmup above 0 (default 0.3)")
        return self


def _range_text(meta: Mapping[str, Any]) -> str:
    lo = "above" if meta.get("open_low") else "at least"
    hi = "below" if meta.get("open_high") else "at most"
    return f"{lo} {meta['low']:g} and {hi} {meta['high']:g}"


def cli_fields() -> list[dataclasses.Field]:
    """The fields that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)]


def _checked(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the field type ``hint`` (ints are accepted for floats)."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in allowed:
        kind = typing.get_origin(kind) or kind
        if kind is type(None) and value is None:
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool, dict) and isinstance(value, kind):
            return value
    names = " or ".join(
        "null" if k is type(None) else getattr(typing.get_origin(k) or k, "__name__", str(k)) for k in allowed
    )
    raise BrainMRIError(f"config key {name!r} must be {names}, got {_shown_value(value)}")


#: Largest config file read: a config is a few dozen settings, a few kilobytes.
MAX_CONFIG_BYTES = 2**20


def _shown_value(value: Any) -> str:
    """``repr(value)`` cut short without building it whole: a nested value from a file could
    take gigabytes to print in full."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = MAX_SHOWN_CHARS
    return brief(shortener.repr(value))


def _refuse_yaml_aliases(text: str, path: Path) -> None:
    """No anchors or aliases: a few lines of them ("billion laughs") expand into gigabytes
    wherever the loaded value is walked or printed, and no setting needs them."""
    import yaml

    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise BrainMRIError(
                f"config file {path} uses a YAML anchor or alias (line {mark.line + 1}); write each value out"
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file (a regular file of at most 1 MB, YAML without anchors or
    aliases) into a dict of TrainConfig fields; every error is one short line."""
    from brainmri.files import FileRefused, read_regular

    path = Path(path)
    try:
        text = read_regular(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileRefused as exc:
        raise BrainMRIError(f"cannot read config file {path}: {exc}") from None
    except UnicodeDecodeError:
        raise BrainMRIError(f"config file {path} is not a UTF-8 text file (JSON or YAML expected)") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            _refuse_yaml_aliases(text, path)
            values = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        else:
            values = json.loads(text)
    except BrainMRIError:
        raise
    except Exception as exc:  # YAML and JSON errors; RecursionError for absurd nesting
        first = brief(" ".join(str(exc).split()))  # YAML messages span several lines
        raise BrainMRIError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {first}") from None
    if not isinstance(values, dict):
        raise BrainMRIError(f"config file {path} must hold a mapping of settings")
    return values
