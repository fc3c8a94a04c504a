"""Training configuration: the paper's settings as defaults, every one overridable.

The effective configuration is saved as ``config.json`` in each run folder; a JSON (or
YAML) file in the same shape can be passed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainmri.errors import BrainMRIError

#: What trains: the whole network (the paper), the head only, or the last stage and the head.
FINETUNE_MODES = ("full", "head", "last")


@dataclass
class TrainConfig:
    # data
    data: str = ""  # prepared folder (OUT of `brainmri data prepare`)
    split: str | None = None  # an existing split file; None: make one from seed/test_size
    test_size: float = 0.2
    fold: int | None = None  # with a k-fold split file: which fold is held out
    limit_per_class: int | None = None  # subsample for quick runs and tests
    # Fraction of the training side (whole duplicate groups, per label) held out to choose the
    # best epoch. 0 (the paper): no choice is made, the last epoch is kept, and the per-epoch
    # validation curves are computed on the test side, which never selects anything.
    val_size: float = 0.0
    # model
    arch: str = "resnet50"
    weights: str = "imagenet"  # imagenet | none | PATH
    finetune: str = "full"  # full | head | last
    # optimisation (the paper: Adam 1e-4, 10 epochs, batch 32, cross-entropy)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    image_size: int = 256
    # augmentation (rotation degrees; shifts and zoom as fractions; shear degrees)
    augment: bool = True
    rotation: float = 15.0
    shift: float = 0.1
    zoom: float = 0.1
    shear: float = 10.0
    hflip: bool = False
    balance: str = "oversample"  # oversample (paper: extra augmented `normal`) | class_weights | none
    # execution
    seed: int = 42
    deterministic: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 0
    channels_last: bool = True
    tensorboard: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping (a config file, a run's config.json), each value checked
        against its field's type so that a typo fails here, in one line, not mid-training."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise BrainMRIError(f"unknown config keys: {', '.join(unknown)}; known: {', '.join(sorted(hints))}")
        return cls(**{name: _checked(name, value, hints[name]) for name, value in values.items()})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


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
    raise BrainMRIError(f"config key {name!r} must be {names}, got {value!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict of TrainConfig fields."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrainMRIError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BrainMRIError(f"config file {path} is not a UTF-8 text file (JSON or YAML expected)") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:
        first = " ".join(str(exc).split())  # YAML messages span several lines
        raise BrainMRIError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {first}") from None
    if not isinstance(values, dict):
        raise BrainMRIError(f"config file {path} must hold a mapping of settings")
    return values
