"""Named tensors in safetensors files: a format that holds only tensors and a few strings, so
that opening a model someone sent never runs pickled code (what ``torch.load`` guards against
only by its ``weights_only`` allow-list)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brainmri.errors import BrainMRIError
from brainmri.files import FileRefused, read_regular

#: Largest tensor file read (a ResNet-152 is 240 MB; a bigger file is not one of our models).
MAX_TENSOR_FILE_BYTES = 4 * 2**30


def tensor_bytes(group: dict[str, Any]) -> bytes:
    """A group of tensors and strings (``{"transform": tensor, "method": "mahalanobis"}``) as a
    safetensors file: the tensors (contiguous CPU copies) as tensors, the strings as its metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in group.items() if isinstance(v, torch.Tensor)}
    metadata = {k: v for k, v in group.items() if isinstance(v, str)}
    others = sorted(set(group) - set(tensors) - set(metadata))
    if others:
        raise TypeError(f"only tensors and strings go into a tensor file, not {others}")
    return save(tensors, metadata=metadata or None)


def read_tensors(path: str | Path) -> dict[str, Any]:
    """A safetensors file as one group: its tensors and its metadata strings (:func:`tensor_bytes`);
    anything else is one clear error."""
    from safetensors.torch import load

    path = Path(path)
    try:
        data = read_regular(path, MAX_TENSOR_FILE_BYTES)
    except FileRefused as exc:
        raise BrainMRIError(f"{path}: {exc}") from None
    try:
        tensors = load(data)
        metadata = _metadata(data)
    except Exception:
        raise BrainMRIError(f"{path} is not a safetensors file (cannot be read as one)") from None
    return {**metadata, **tensors}


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header); ``load`` returns only tensors."""
    import json

    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("metadata is not a mapping of strings")
    return meta
