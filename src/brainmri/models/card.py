"""The model card every checkpoint and ONNX export carries: what the model is, how its input
is prepared, what it was trained and evaluated on, what it is for and what it is not.

:func:`make_card` writes one; :func:`check_card` checks one wherever a model is opened, so
that a damaged, hand-edited or crafted card is one clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

from brainmri.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from brainmri.errors import BrainMRIError

NOTICE = (
    "Research software. Not a medical device: not validated for clinical diagnosis, "
    "and must not be used to make or support clinical decisions."
)
INTENDED_USE = (
    "Research on automated classification of single axial/coronal/sagittal brain MRI slices "
    "into glioma, meningioma, pituitary tumour or no tumour, and comparison of architectures."
)

#: Bounds of the card fields that size the work done with a model. The paper's models take
#: 256 px; no slice model needs more than 2048 px, and a card beyond that is damaged or
#: crafted: inference would try to allocate tens of gigabytes for one slice.
MAX_CLASSES = 1000
#: Longest class or architecture name; names are shown in tables, JSON and page headers.
MAX_NAME_CHARS = 100
#: Longest free-text field (notice, intended use, limitations, ...).
MAX_TEXT_CHARS = 20_000
TEXT_FIELDS = (
    "name",
    "weights",
    "weights_origin",
    "finetune",
    "intended_use",
    "limitations",
    "notice",
    "created",
    "brainmri_version",
)
MAPPING_FIELDS = ("weights_record", "preprocessing", "training_data", "split", "metrics", "config", "export")
TTA_MODES = (None, "hflip")


class ModelCard(TypedDict, total=False):
    """A model card's fields, typed so that a misspelt key is a type error where a card crosses
    modules. ``make_card`` writes the first group; evaluation, calibration and export add the
    rest. Stored as a plain mapping (checkpoint, ONNX metadata, config.json of an export folder)
    and checked by :func:`check_card` wherever a model is opened."""

    name: str
    arch: str
    classes: list[str]
    image_size: int
    prepared_size: int | None
    preprocessing: dict[str, Any]
    tta: str | None
    weights: str
    weights_origin: str
    weights_record: dict[str, Any]
    finetune: str
    training_data: dict[str, Any]
    split: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any]
    intended_use: str
    limitations: str
    notice: str
    created: str
    brainmri_version: str
    # added after training: temperature scaling, the input check, the chosen explanation, export
    temperature: float
    calibration: dict[str, Any]
    input_check: dict[str, Any]
    explanation: dict[str, Any]
    export: dict[str, Any]


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value.isprintable()


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE


def check_card(card: Any, where: str | Path) -> ModelCard:
    """The fields every user of a model relies on, checked once where a model is opened, so
    that a damaged, hand-edited or crafted card is one clear error instead of a failure (or
    an allocation of gigabytes) later on. Sizes, class count and name lengths are bounded."""
    if not isinstance(card, dict):
        raise BrainMRIError(f"{where}: the model card is missing or not a mapping")
    problems = []
    if not _is_name(card.get("arch")):
        problems.append("arch")
    classes = card.get("classes")
    if (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_CLASSES
        or not all(_is_name(c) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        problems.append(f"classes (2..{MAX_CLASSES} distinct names of at most {MAX_NAME_CHARS} characters)")
    for key in ("image_size", "prepared_size"):
        value = card.get(key)
        if (key == "image_size" or value is not None) and not _is_size(value):
            shown = f"={value!r}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            problems.append(f"{key}{shown} (an integer {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE})")
    if card.get("tta") not in TTA_MODES:
        problems.append("tta")
    for key in TEXT_FIELDS:
        value = card.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS):
            problems.append(key)
    problems += [key for key in MAPPING_FIELDS if card.get(key) is not None and not isinstance(card[key], dict)]
    if problems:
        raise BrainMRIError(f"{where}: damaged model card (missing or invalid: {', '.join(problems)})")
    return cast(ModelCard, card)


def make_card(
    arch: str,
    image_size: int,
    weights: str,
    classes: list[str] | tuple[str, ...],
    mean: list[float] | tuple[float, ...],
    std: list[float] | tuple[float, ...],
    finetune: str = "full",
    training_data: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    prepared_size: int | None = None,
    tta: bool = False,
    weights_record: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card every checkpoint carries: enough to use, audit and cite the model.

    ``prepared_size`` is the size of the prepared images the model was trained from, so that
    inference can resize through it exactly as training did (:func:`brainmri.io.preprocess.to_array`).
    ``tta`` says that the model's probabilities are those of the slice and its mirror image
    averaged, as it was validated (:func:`brainmri.inference.forward.probabilities`).
    """
    import datetime

    from brainmri import __version__

    if weights in ("imagenet",):
        enum = (weights_record or {}).get("enum") or f"{arch}, DEFAULT"
        origin = f"torchvision ImageNet weights ({enum}), fine-tuned"
    elif weights in ("none", "", None):
        origin = "random initialisation (trained from scratch)"
    else:
        origin = f"initialised from local file {weights}"
    return {
        "name": f"brainmri-{arch}",
        "arch": arch,
        "classes": list(classes),
        "image_size": int(image_size),
        "prepared_size": int(prepared_size) if prepared_size else None,
        "preprocessing": describe_preprocessing(image_size, mean, std, prepared_size),
        "tta": "hflip" if tta else None,
        "weights": weights or "none",
        "weights_origin": origin,
        "weights_record": weights_record or {},
        "finetune": finetune,
        "training_data": training_data or {},
        "split": split or {},
        "metrics": metrics or {},
        "config": config or {},
        "intended_use": INTENDED_USE,
        "limitations": (
            "Images are split by the given patient groups"
            if (split or {}).get("level") == "patient"
            else "Images are not split by patient"
        )
        + "; trained on one public dataset; not validated on external clinical data.",
        "notice": NOTICE,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "brainmri_version": __version__,
    }


def describe_preprocessing(
    size: int, mean: Sequence[float], std: Sequence[float], prepared_size: int | None = None
) -> dict:
    """The preprocessing (:mod:`brainmri.io.preprocess`), as recorded in every model card so that
    others can repeat it."""
    via = f"{prepared_size}x{prepared_size} (the prepared data), then " if prepared_size not in (None, size) else ""
    return {
        "decode": "any format -> 8-bit grayscale (RGB: ITU-R 601 luma; 16-bit and DICOM: "
        "window/min-max to 0..255; EXIF orientation applied; alpha composited on black)",
        "resize": f"{via}{size}x{size} bilinear, aspect ratio not kept",
        "input": f"float32 tensor (N, 1, {size}, {size}) with values in [0, 1]",
        "in_model": "channel replicated to 3, normalised with mean/std below",
        "mean": list(map(float, mean)),
        "std": list(map(float, std)),
        "image_size": size,
    }
