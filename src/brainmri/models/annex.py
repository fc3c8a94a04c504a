"""What is learnt about a trained model after training, kept beside its checkpoint.

Evaluation (the card's ``metrics``, the explanation method chosen against tumour boxes) and a
later calibration of the input check (``brainmri calibrate RUN``) never rewrite
``checkpoints/best.pt``: the file training wrote stays byte for byte what it was, so that its
hash, a copy, or a reader that holds it open are never changed under them. Their results sit
beside it:

``best.card.json``
    ``{"format": "brainmri-card-annex", "version": 1, "checkpoint_sha256": ..., "card": {...},
    "tensors": {KEY: {"file": "best.KEY.safetensors", "sha256": ...}}}``: card fields that
    replace the checkpoint's own, and the tensor groups (the input check's statistics) that
    replace ``ckpt[KEY]``;
``best.KEY.safetensors``
    one such group (:mod:`brainmri.models.tensorfile`).

:func:`brainmri.models.checkpoint.read_checkpoint` merges the annex into what it returns, so
predict, serve, export, evaluate and info see one model card as before. The annex names the
checkpoint it describes by its hash: a checkpoint written anew (a retrained run) is a new
model, and an annex about the old one is not applied to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_bytes, atomic_write_text, file_sha256

FORMAT = "brainmri-card-annex"
VERSION = 1
SUFFIX = ".card.json"
#: Largest annex read: card fields are small (the image statistics' matrix is the biggest).
MAX_ANNEX_BYTES = 16 * 2**20


def annex_path(checkpoint: str | Path) -> Path:
    """``checkpoints/best.pt`` -> ``checkpoints/best.card.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def tensors_path(checkpoint: str | Path, key: str) -> Path:
    """``checkpoints/best.pt``, ``input_check`` -> ``checkpoints/best.input_check.safetensors``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{key}.safetensors")


def _read(checkpoint: Path, digest: str | None = None) -> dict[str, Any] | None:
    """The annex of ``checkpoint`` if it has one that describes it (``digest``: its sha256,
    computed here when not given); None otherwise. A damaged annex is one clear error."""
    path = annex_path(checkpoint)
    if not path.is_file():
        return None
    from brainmri.files import FileRefused, read_regular

    try:
        annex = json.loads(read_regular(path, MAX_ANNEX_BYTES))
    except FileRefused as exc:
        raise BrainMRIError(f"{path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BrainMRIError(f"{path} is damaged (not valid JSON); delete it and evaluate or calibrate again") from None
    if (
        not isinstance(annex, dict)
        or annex.get("format") != FORMAT
        or not isinstance(annex.get("card"), dict)
        or not isinstance(annex.get("tensors"), dict)
    ):
        raise BrainMRIError(f"{path} is not a brainmri card annex; delete it and evaluate or calibrate again")
    if not isinstance(annex.get("version"), int) or annex["version"] > VERSION:
        raise BrainMRIError(f"{path} was written by a newer brainmri (format {annex.get('version')!r})")
    if annex.get("checkpoint_sha256") != (digest or file_sha256(checkpoint)):
        return None  # about another model that was in this file before (a retrained run)
    return annex


def apply_annex(ckpt: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """``ckpt`` (as read from ``checkpoint``) with its annex merged in: card fields replaced,
    tensor groups set. Unchanged without a current annex."""
    from brainmri.models.tensorfile import read_tensors

    checkpoint = Path(checkpoint)
    annex = _read(checkpoint)
    if annex is None:
        return ckpt
    merged = {**ckpt, "card": {**ckpt["card"], **annex["card"]}}
    for key, entry in annex["tensors"].items():
        path = tensors_path(checkpoint, key)
        if not isinstance(entry, dict) or not path.is_file() or entry.get("sha256") != file_sha256(path):
            raise BrainMRIError(
                f"{path} is missing or does not match {annex_path(checkpoint).name}; run 'brainmri calibrate RUN "
                "--overwrite'"
            )
        merged[key] = read_tensors(path)
    return merged


def write_annex(checkpoint: str | Path, card: dict[str, Any], tensors: dict[str, dict[str, Any]] | None = None) -> Path:
    """Record card fields (and tensor groups) about ``checkpoint`` beside it, over what its
    annex held already; the checkpoint itself is not touched. Tensor files are written first
    and the annex last, which names them by hash: an interruption leaves the old annex whole
    or detects the mismatch. Returns the annex's path."""
    from brainmri.models.tensorfile import tensor_bytes

    checkpoint = Path(checkpoint)
    digest = file_sha256(checkpoint)
    annex = _read(checkpoint, digest) or {"card": {}, "tensors": {}}
    entries = dict(annex["tensors"])
    for key, group in (tensors or {}).items():
        data = tensor_bytes(group)
        path = tensors_path(checkpoint, key)
        atomic_write_bytes(path, data)
        entries[key] = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}
    record = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": digest,
        "card": {**annex["card"], **card},
        "tensors": entries,
    }
    path = annex_path(checkpoint)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
