"""Checkpoints that carry their own model card, written atomically.

A checkpoint is a plain dict loadable with ``torch.load(weights_only=True)`` (no pickled
code runs when a user opens a model someone sent them):

``{"format": "brainmri-checkpoint", "version": 1, "card": {...}, "model_state": {...},
"optimizer_state": {...} | None, "epoch": int, "extra": {...}}``
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_bytes

FORMAT = "brainmri-checkpoint"
VERSION = 1

NOTICE = (
    "Research software. Not a medical device: not validated for clinical diagnosis, "
    "and must not be used to make or support clinical decisions."
)
INTENDED_USE = (
    "Research on automated classification of single axial/coronal/sagittal brain MRI slices "
    "into glioma, meningioma, pituitary tumour or no tumour, and comparison of architectures."
)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    card: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save model weights, model card and (for resuming) optimiser state atomically."""
    import io

    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {
        "format": FORMAT,
        "version": VERSION,
        "card": card,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict, refusing anything that is not one of ours."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if candidate.exists():
                path = candidate
                break
        else:
            raise BrainMRIError(f"{path} is a folder without checkpoints/best.pt")
    if not path.exists():
        raise BrainMRIError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about old pickle protocols: not ours to show
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise BrainMRIError(f"{path} is not a brainmri checkpoint (cannot be read as one)") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BrainMRIError(f"{path} is not a brainmri checkpoint (no brainmri model card inside)")
    version = obj.get("version", 0)
    if not isinstance(version, int):
        raise BrainMRIError(f"{path}: damaged checkpoint (format version {version!r})")
    if version > VERSION:
        raise BrainMRIError(f"{path} was written by a newer brainmri (format {version}); upgrade brainmri")
    check_card(obj.get("card"), path)
    if not isinstance(obj.get("model_state"), dict):
        raise BrainMRIError(f"{path}: damaged checkpoint (no model weights)")
    return obj


def check_card(card: Any, where: str | Path) -> dict[str, Any]:
    """The fields every user of a model relies on, checked once where a model is opened, so
    that a damaged or hand-edited card is one clear error instead of a failure later on."""
    if not isinstance(card, dict):
        raise BrainMRIError(f"{where}: the model card is missing or not a mapping")
    problems = []
    if not isinstance(card.get("arch"), str) or not card["arch"]:
        problems.append("arch")
    classes = card.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        problems.append("classes")

    def is_size(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 8

    if not is_size(card.get("image_size")):
        problems.append("image_size")
    if card.get("prepared_size") is not None and not is_size(card["prepared_size"]):
        problems.append("prepared_size")
    if problems:
        raise BrainMRIError(f"{where}: damaged model card (missing or invalid: {', '.join(problems)})")
    return card


def update_card(path: str | Path, **fields: Any) -> None:
    """Replace fields of a checkpoint's model card (e.g. ``metrics`` after evaluation),
    rewriting the file atomically and leaving weights and optimiser state untouched."""
    import io

    path = Path(path)
    ckpt = read_checkpoint(path)
    ckpt["card"] = {**ckpt["card"], **fields}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by a checkpoint's card and load its weights (eval mode)."""
    from brainmri.models import build_model

    ckpt = read_checkpoint(path)
    card = ckpt["card"]
    try:
        model = build_model(card["arch"], weights="none", num_classes=len(card["classes"]))
    except KeyError as exc:
        raise BrainMRIError(f"{path}: model card lacks {exc}") from None
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError:
        raise BrainMRIError(
            f"{path}: weights do not match architecture {card['arch']!r} named in its model card"
        ) from None
    model.eval().to(device)
    return model, card


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
) -> dict[str, Any]:
    """The model card every checkpoint carries: enough to use, audit and cite the model.

    ``prepared_size`` is the size of the prepared images the model was trained from, so that
    inference can resize through it exactly as training did (:func:`brainmri.preprocess.to_array`).
    ``tta`` says that the model's probabilities are those of the slice and its mirror image
    averaged, as it was validated (:func:`brainmri.inference.probabilities`).
    """
    import datetime

    from brainmri import __version__
    from brainmri.preprocess import describe

    if weights in ("imagenet",):
        origin = f"torchvision ImageNet weights ({arch}, DEFAULT), fine-tuned"
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
        "preprocessing": describe(image_size, mean, std, prepared_size),
        "tta": "hflip" if tta else None,
        "weights": weights or "none",
        "weights_origin": origin,
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
