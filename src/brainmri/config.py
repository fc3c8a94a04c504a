"""Training configuration: the paper's settings as defaults, every one overridable.

Each field carries its command-line help, its choices and its range as metadata, so that
``brainmri train`` and ``brainmri compare`` generate the same flags from this one class, and
one pydantic model generated from the same metadata checks every setting when a config is made
(:func:`_validated`), whoever made it: a flag, a config file, a notebook. A bad value is one
short line naming its field, the same line from all three. The effective configuration is saved
as ``config.json`` in each run folder; a JSON (or YAML) file in the same shape can be passed
back with ``--config``.

The parts of training receive sections of it (:class:`OptimSettings` ...), not the whole.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
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
    fused: bool = False


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


@dataclass(frozen=True)
class LoopSettings:
    """What the training loop reads (:mod:`brainmri.training.loop`): the sections of the parts
    it builds, and its own few values."""

    optim: OptimSettings
    sampling: SamplingSettings
    augment: AugmentSettings
    epochs: int
    image_size: int
    progressive: tuple[tuple[int, float], ...]  # (size, fraction of the epochs) pairs, checked
    seed: int
    label_smoothing: float
    ema: float
    channels_last: bool
    workers: int
    tta: bool
    eval_precision: str

    def epoch_size(self, epoch: int) -> int:
        """The image size epoch ``epoch`` (1-based) trains at under ``--progressive``."""
        return _epoch_size(self.progressive, self.epochs, self.image_size, epoch)


def _opt(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None, **extra: Any) -> Any:
    """A field with its CLI help, choices and range in its metadata.

    ``low``/``high`` bound the value (inclusive unless ``open_low``/``open_high``); ``flag``
    False keeps a field off the command line (it is set by other means).
    """
    meta = {"help": help, "choices": choices, "low": low, **extra}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Checked when made (and so on every ``replace``), and
    frozen: a config that exists is a valid one, which the parts of training can trust."""

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
    fused_optimizer: bool = _opt(
        False,
        "update all parameters in one fused kernel (torch's fused=True): the same update, faster, "
        "rounded differently, so off (the default) repeats earlier runs bit for bit",
    )
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
        "(e.g. 64:0.4,96:0.3; none or empty: every epoch at --image-size). Batches are downscaled after "
        "augmentation; the model sees --image-size in its last epochs, at validation and at inference",
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

    def __post_init__(self) -> None:
        if isinstance(self.progressive, str) and self.progressive.strip().lower() == "none":
            # one spelling of "no progressive resizing", so that a config saying none equals one
            # saying '' (a resumed run compares them)
            object.__setattr__(self, "progressive", "")
        for name, value in _validated(self).items():  # an int given for a float becomes a float
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from a mapping (a config file, a run's config.json, the flags), checked like
        any other (:func:`_validated`), so that a typo fails here, in one line, not mid-training."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(map(str, set(values) - set(hints)))
        if unknown:
            listed = brief(", ".join(_shown_value(k) if not k.isidentifier() else k for k in unknown))
            raise BrainMRIError(f"unknown config keys: {listed}; known: {', '.join(sorted(hints))}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def effective_warmup(self) -> float:
        """The warm-up fraction in use: the given one, or the schedule's default."""
        return DEFAULT_WARMUP[self.schedule] if self.warmup is None else self.warmup

    # Sections: each part of training receives only the settings it reads.

    def optim_section(self) -> OptimSettings:
        return OptimSettings(
            self.optimizer,
            self.lr,
            self.weight_decay,
            self.momentum,
            self.schedule,
            self.effective_warmup,
            self.fused_optimizer,
        )

    def sampling_section(self) -> SamplingSettings:
        return SamplingSettings(self.batch_size, self.balance, self.seed)

    def augment_section(self) -> AugmentSettings:
        return AugmentSettings(self.augment, self.rotation, self.shift, self.zoom, self.shear, self.hflip, self.crop)

    def loop_section(self) -> LoopSettings:
        return LoopSettings(
            optim=self.optim_section(),
            sampling=self.sampling_section(),
            augment=self.augment_section(),
            epochs=self.epochs,
            image_size=self.image_size,
            progressive=tuple(self.progressive_sizes()),
            seed=self.seed,
            label_smoothing=self.label_smoothing,
            ema=self.ema,
            channels_last=self.channels_last,
            workers=self.workers,
            tta=self.tta,
            eval_precision=self.eval_precision,
        )

    def progressive_sizes(self) -> list[tuple[int, float]]:
        """``--progressive`` as (size, fraction of the epochs) pairs."""
        return _progressive_pairs(self.progressive, self.image_size)

    def epoch_size(self, epoch: int) -> int:
        """The image size epoch ``epoch`` (1-based) trains at under ``--progressive``."""
        return _epoch_size(self.progressive_sizes(), self.epochs, self.image_size, epoch)

    def check(self) -> TrainConfig:
        """Every setting checked again, as when the config was made; returns ``self``. Checks
        that need the file system (data, weights) are the trainer's."""
        _validated(self)
        return self


def cli_fields() -> list[dataclasses.Field]:
    """The fields that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)]


def _progressive_pairs(spec: str, image_size: int) -> list[tuple[int, float]]:
    """``--progressive`` SIZE:FRACTION,... parsed and checked against ``image_size``."""
    if not spec.strip():
        return []
    out = []
    for part in spec.split(","):
        size, _, fraction = part.strip().partition(":")
        try:
            pair = (int(size), float(fraction))
        except ValueError:
            raise BrainMRIError(f"--progressive {spec!r}: write SIZE:FRACTION,... e.g. 64:0.4,96:0.3") from None
        if not MIN_IMAGE_SIZE <= pair[0] <= image_size or not 0 < pair[1] < 1:
            raise BrainMRIError(
                f"--progressive {part.strip()!r}: sizes from {MIN_IMAGE_SIZE} to --image-size {image_size}, "
                "fractions between 0 and 1"
            )
        out.append(pair)
    if sum(f for _, f in out) >= 1:
        raise BrainMRIError(f"--progressive {spec!r}: the fractions must leave epochs at --image-size")
    return out


def _epoch_size(progressive: Sequence[tuple[int, float]], epochs: int, image_size: int, epoch: int) -> int:
    """The size of ``epoch`` (1-based); the last epoch is always at ``image_size``, so that a
    short run (``--epochs 1`` with a preset's progressive resizing) still ends on the size it is
    validated and used at."""
    if epoch >= epochs:
        return image_size
    done = 0.0
    for size, fraction in progressive:
        done += fraction
        if epoch <= round(done * epochs):
            return size
    return image_size


# --- the checks: one pydantic model, generated from the fields and their metadata -----------------


def _validated(config: TrainConfig) -> dict[str, Any]:
    """Check every setting of ``config`` (its type, choices and range, then the rules between
    settings) and return the values that checking converted (an int given for a float).

    The one place a setting is checked, whoever made the config. Pydantic finds the problems,
    strictly (no "1e-4" strings for numbers, no booleans for integers, no NaN); the first is
    reported as one short line with the flag's name, never pydantic's multi-line report. Type
    errors come first: a config file's typo is the likeliest cause of whatever else fails."""
    import pydantic

    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    try:
        checked = _rules().model_validate(values)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = min(errors, key=lambda e: not _is_type_error(e))  # min keeps the field order among equals
        raise BrainMRIError(_problem(first)) from None
    converted = {name: getattr(checked, name) for name in values}
    return {name: v for name, v in converted.items() if type(v) is not type(values[name])}


def _across_fields(values: Mapping[str, Any]) -> str | None:
    """The rules between settings, each already of its type and in its range: the first
    broken one's message, or None."""
    if values["groups"] and values["split_policy"] == "random":
        return "--groups keeps each group on one side, --split-policy random splits image by image: choose one"
    try:
        _progressive_pairs(values["progressive"], values["image_size"])
    except BrainMRIError as exc:
        return str(exc)
    warmup = DEFAULT_WARMUP[values["schedule"]] if values["warmup"] is None else values["warmup"]
    if values["schedule"] == "onecycle" and warmup <= 0:
        return "--schedule onecycle needs a warm-up: --warmup above 0 (default 0.3)"
    if values["fold"] is not None and not values["split"]:
        return "--fold needs --split FILE, a k-fold split file made by 'brainmri data split --k K'"
    return None


@functools.cache
def _rules() -> Any:
    """The pydantic model of :class:`TrainConfig`: each field's type with the choices and range
    of its metadata, floats finite, then :func:`_across_fields`. Built on first use (pydantic is
    imported only by what makes a config)."""
    import pydantic
    from pydantic_core import PydanticCustomError

    class Rules(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

        @pydantic.model_validator(mode="after")
        def _across(self) -> Any:
            problem = _across_fields(dict(self))
            if problem:
                raise PydanticCustomError("config", "{problem}", {"problem": problem})
            return self

    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {f.name: (_rule(hints[f.name], f.metadata), ...) for f in dataclasses.fields(TrainConfig)}
    return pydantic.create_model("TrainConfigRules", __base__=Rules, **fields)


def _rule(hint: Any, meta: Mapping[str, Any]) -> Any:
    """One field's type for pydantic: its kind (a dict of any keys, as config files may hold)
    with the metadata's choices or range; optional where the field may be None."""
    import pydantic
    from pydantic_core import PydanticCustomError

    kinds = _kinds(hint)
    kind = next(typing.get_origin(k) or k for k in kinds if k is not type(None))
    rule: Any = kind
    choices = meta.get("choices")
    if choices:

        def one_of(value: Any) -> Any:
            if value not in choices:
                raise PydanticCustomError("choice", "not one of the choices")
            return value

        rule = typing.Annotated[kind, pydantic.AfterValidator(one_of)]
    low = "gt" if meta.get("open_low") else "ge"
    high = "lt" if meta.get("open_high") else "le"
    bounds = {k: v for k, v in ((low, meta.get("low")), (high, meta.get("high"))) if v is not None}
    if bounds:
        rule = typing.Annotated[rule, pydantic.Field(**bounds)]
    return rule | None if type(None) in kinds else rule


def _kinds(hint: Any) -> tuple[Any, ...]:
    """The types a field's hint allows: ``float | None`` -> (float, NoneType)."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _is_type_error(error: Mapping[str, Any]) -> bool:
    return str(error["type"]).endswith("_type")


def _problem(error: Mapping[str, Any]) -> str:
    """Pydantic's report of one bad setting as the line the user reads, naming the setting."""
    if error["type"] == "config":  # a rule between settings: its own message
        return str(error["ctx"]["problem"])
    name, value = str(error["loc"][0]), error["input"]
    meta, flag = _field(name).metadata, "--" + name.replace("_", "-")
    if _is_type_error(error):
        allowed = _kinds(typing.get_type_hints(TrainConfig)[name])
        names = " or ".join(
            "null" if k is type(None) else getattr(typing.get_origin(k) or k, "__name__", str(k)) for k in allowed
        )
        return f"config key {name!r} must be {names}, got {_shown_value(value)}"
    if error["type"] == "choice":
        return f"unknown {flag} {_shown_value(value)}; choose one of {', '.join(meta['choices'])}"
    if float in _kinds(typing.get_type_hints(TrainConfig)[name]):
        value = float(value)  # the same line for lr: -1 in a file, --lr -1 and lr=-1
    if error["type"] == "finite_number":
        return f"{flag} must be a finite number, got {value}"
    if meta.get("high") is not None:
        return f"{flag} must be {_range_text(meta)}, got {value}"
    least = "above" if meta.get("open_low") else ("at least" if isinstance(value, int) else ">=")
    return f"{flag} must be {least} {meta['low']:g}, got {value}"


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def _range_text(meta: Mapping[str, Any]) -> str:
    lo = "above" if meta.get("open_low") else "at least"
    hi = "below" if meta.get("open_high") else "at most"
    return f"{lo} {meta['low']:g} and {hi} {meta['high']:g}"


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
