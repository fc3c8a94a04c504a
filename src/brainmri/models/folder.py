"""A model as a folder of plain files (``brainmri export RUN --format folder --out DIR``):

``config.json``
    the model card (:mod:`brainmri.models.card`), as JSON;
``model.safetensors``
    the weights (the state dict); its metadata says the format and lists the other tensor files;
``input_check.safetensors``
    the input check's fitted statistics, when the run was calibrated;
``README.md``
    the card for people.

Reading it never unpickles anything: safetensors holds tensors and strings only, so a folder
from anyone is as safe to open as its JSON. :func:`read_folder` returns the same dict as
:func:`brainmri.models.checkpoint.read_checkpoint`, so that predict, serve and the Python API
take a folder wherever they take a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainmri.errors import BrainMRIError

FORMAT = "brainmri-folder"
VERSION = 1
FOLDER_CONFIG = "config.json"
FOLDER_WEIGHTS = "model.safetensors"
FOLDER_README = "README.md"
#: Keys of a checkpoint dict that are not tensor groups a folder may carry.
_RESERVED = {"format", "version", "card", "model_state", "optimizer_state", "epoch", "extra"}
MAX_CONFIG_BYTES = 16 * 2**20


def write_folder(
    out: str | Path,
    card: Mapping[str, Any],
    model_state: dict[str, Any],
    groups: dict[str, dict[str, Any]],
    readme: str,
    overwrite: bool = False,
) -> Path:
    """Write the folder: built in a hidden folder beside ``out`` and renamed into place, so that
    ``out`` is never half written. An existing ``out`` is replaced only with ``overwrite``."""
    from brainmri.files import atomic_write_bytes, atomic_write_text, publish_dir, shown, staging_dir
    from brainmri.models.tensorfile import tensor_bytes

    out = Path(out)
    if out.exists() and not overwrite:
        raise BrainMRIError(f"{shown(out)} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise BrainMRIError(f"cannot write {shown(out)}: it is a file, not a folder")
    bad = [key for key in groups if key in _RESERVED or not key.isidentifier()]
    if bad:
        raise ValueError(f"tensor groups cannot be named {bad}")
    staged = staging_dir(out)
    try:
        meta = {"format": FORMAT, "version": str(VERSION), "groups": json.dumps(sorted(groups))}
        atomic_write_bytes(staged / FOLDER_WEIGHTS, tensor_bytes({**model_state, **meta}))
        for key, group in groups.items():
            atomic_write_bytes(staged / f"{key}.safetensors", tensor_bytes(group))
        atomic_write_text(staged / FOLDER_CONFIG, json.dumps(card, indent=2, sort_keys=True) + "\n")
        atomic_write_text(staged / FOLDER_README, readme)
        publish_dir(staged, out)
    except BaseException:
        import shutil

        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def read_folder(path: str | Path) -> dict[str, Any]:
    """A folder export as a checkpoint dict (``card``, ``model_state`` and its tensor groups)."""
    from brainmri.files import FileRefused, read_regular
    from brainmri.models.card import check_card
    from brainmri.models.tensorfile import read_tensors

    path = Path(path)
    weights = read_tensors(path / FOLDER_WEIGHTS)
    meta = {k: weights.pop(k) for k in [k for k, v in weights.items() if isinstance(v, str)]}
    if meta.get("format") != FORMAT:
        raise BrainMRIError(f"{path / FOLDER_WEIGHTS} is not the weights of a brainmri folder export")
    version = meta.get("version", "")
    if not version.isdigit() or int(version) > VERSION:
        raise BrainMRIError(f"{path} was written by a newer brainmri (folder format {version!r}); upgrade brainmri")
    try:
        card = json.loads(read_regular(path / FOLDER_CONFIG, MAX_CONFIG_BYTES))
    except FileRefused as exc:
        raise BrainMRIError(f"{path / FOLDER_CONFIG}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BrainMRIError(f"{path / FOLDER_CONFIG} is not valid JSON") from None
    check_card(card, path / FOLDER_CONFIG)
    try:
        names = json.loads(meta.get("groups", "[]"))
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise BrainMRIError(f"{path / FOLDER_WEIGHTS}: damaged metadata (groups)")
    ckpt: dict[str, Any] = {"format": FORMAT, "version": int(version), "card": card, "model_state": weights}
    for name in names:
        if name in _RESERVED:
            raise BrainMRIError(f"{path / FOLDER_WEIGHTS}: damaged metadata (a tensor group named {name!r})")
        ckpt[name] = read_tensors(path / f"{name}.safetensors")
    return ckpt
