"""Checkpoints that carry their own model card, written atomically.

A checkpoint is a plain dict loadable with ``torch.load(weights_only=True)`` (no pickled
code runs when a user opens a model someone sent them):

``{"format": "brainmri-checkpoint", "version": 1, "card": {...}, "model_state": {...},
"optimizer_state": {...} | None, "epoch": int, "extra": {...}}``

Training is its only writer. What is learnt about the model afterwards (evaluation, a later
calibration of the input check) sits beside it (:mod:`brainmri.models.annex`) and is merged in
when it is read. A model exported as a folder (:mod:`brainmri.models.folder`: safetensors and
JSON) reads as the same dict, without unpickling anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

import torch
from torch import nn

from brainmri.errors import BrainMRIError
from brainmri.files import FileRefused, atomic_write_with, brief, check_regular
from brainmri.models.annex import annex_path, apply_annex
from brainmri.models.card import ModelCard, check_card
from brainmri.models.folder import FOLDER_WEIGHTS
from brainmri.models.folding import fold_batch_norm, is_folded
from brainmri.rundir import BEST_PT, RunDir

FORMAT = "brainmri-checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    card: ModelCard,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save model weights, model card and (for resuming) optimiser state atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if is_folded(model):
        raise BrainMRIError(
            "this model was loaded for inference (batch-norm folded into its convolutions) and would be saved "
            "without its BatchNorm layers; save the state dict of the checkpoint it came from instead"
        )
    state = {
        "format": FORMAT,
        "version": VERSION,
        "card": card,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "extra": extra or {},
    }
    write_checkpoint(path, state)


def write_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint dict atomically (a reader never sees half a file): the one writer of
    checkpoint files, used by training (:func:`save_checkpoint`, and once more at its end for
    the temperature and input check fitted on the kept model).

    ``torch.save`` streams into the file: a ResNet-152's ``last.pt`` (about 1 GB) took about
    3.6 s when built in memory first and 1 s streamed. A failed write (a full disk) is the
    disk's error, not the one torch makes of it."""

    def save(fh: BinaryIO) -> None:
        sink = _WriteErrors(fh)
        try:
            torch.save(ckpt, sink)  # type: ignore[arg-type]  # a file-like object: write, flush
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise

    atomic_write_with(path, save)


class _WriteErrors:
    """A file's ``write`` that remembers the OSError it raised: torch's writer reports a failed
    write as an internal RuntimeError, which would hide a full disk."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def read_checkpoint(path: str | Path, annex: bool = True) -> dict[str, Any]:
    """Load a checkpoint dict, refusing anything that is not one of ours: a ``.pt`` file, a run
    folder (its ``checkpoints/best.pt``) or a folder export. With ``annex`` (not for training,
    which rewrites the file) what evaluation and calibration recorded beside the file is merged
    in (:func:`brainmri.models.annex.apply_annex`)."""
    path = Path(path)
    if path.is_dir() and (path / FOLDER_WEIGHTS).exists():
        from brainmri.models.folder import read_folder

        return read_folder(path)
    if path.is_dir():
        for candidate in (RunDir(path).best, path / BEST_PT):
            if candidate.exists():
                path = candidate
                break
        else:
            raise BrainMRIError(f"{path} is a folder without checkpoints/best.pt")
    if not path.exists():
        raise BrainMRIError(f"model file not found: {path}")
    try:
        check_regular(path)  # a FIFO would hang torch.load, a device feed it without end
    except FileRefused as exc:
        raise BrainMRIError(f"{path}: {exc}") from None
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
    if annex:
        obj = apply_annex(obj, path)
        check_card(obj["card"], annex_path(path))
    return obj


def check_weights_fit(path: str | Path, card: Mapping[str, Any], state: dict[str, Any]) -> None:
    """Compare the weights' names and shapes with the architecture the card names, built on
    PyTorch's ``meta`` device (shapes only, no memory), before the model is built for real: a
    small file that names a huge architecture (``vit_h_14``, 2.5 GB of parameters) must cost
    nothing to refuse."""
    from brainmri.models.build import build_model

    with torch.device("meta"):
        skeleton = build_model(card["arch"], weights="none", num_classes=len(card["classes"]))
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in state if name not in expected or not isinstance(state[name], torch.Tensor)]
    reshaped = [name for name in expected if name in given and given[name] != expected[name]]
    if missing or unexpected or reshaped:
        example = next(iter(missing or unexpected or reshaped))
        raise BrainMRIError(
            f"{path}: weights do not match architecture {card['arch']!r} named in its model card "
            f"({len(missing)} of {len(expected)} tensors missing, {len(reshaped)} of another shape, "
            f"{len(unexpected)} unexpected; e.g. {brief(str(example))})"
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model described by a checkpoint's card and load its weights, as a model for
    inference: eval mode, batch-norm folded into the convolutions (:mod:`brainmri.models.folding`),
    in the channels-last memory format that training validates in. The weights are checked
    against the architecture first (:func:`check_weights_fit`); the checkpoint's ``model_state``
    is the unfolded state dict, for anything that trains or saves."""
    return model_from_checkpoint(read_checkpoint(path), path, device)


def model_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """:func:`load_model` of a checkpoint already read (:func:`read_checkpoint`), for callers
    that need more of it than the model (the input check's statistics): one read, not two.
    ``path`` names the file in errors."""
    from brainmri.models.build import build_model

    card = cast(ModelCard, ckpt["card"])  # checked by read_checkpoint
    check_weights_fit(path, card, ckpt["model_state"])
    model = build_model(card["arch"], weights="none", num_classes=len(card["classes"]))
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError:
        raise BrainMRIError(
            f"{path}: weights do not match architecture {card['arch']!r} named in its model card"
        ) from None
    # batch-norm folded into the convolutions (an inference model; 1.3x at 256 px), then
    # channels-last, as training validates: oneDNN's convolutions run faster on it than on NCHW
    # (docs/precision.md); both change the probabilities by float rounding only
    fold_batch_norm(model.eval()).to(device).to(memory_format=torch.channels_last)
    return model, card
