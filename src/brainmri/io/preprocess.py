"""The single preprocessing path shared by data preparation, training, evaluation,
prediction, export and the web app.

A slice becomes an 8-bit grayscale ``size x size`` array (:func:`to_array`); batches of
those arrays become the model's input with :func:`to_input`. Channel replication and
ImageNet normalisation happen inside the model (:class:`brainmri.models.build.InputAdapter`), so
an exported ONNX model and the PyTorch model take exactly the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from brainmri.io.images import MAX_PIXELS, read_gray

#: Image size of the paper (256 x 256).
DEFAULT_SIZE = 256


def resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize an 8-bit grayscale array to ``size x size`` as the paper did (no aspect crop).

    Pillow's bilinear filter widens its support when shrinking, so downsizing 512 px
    slices does not alias.
    """
    if gray.shape == (size, size):
        return gray
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR))


def to_array(
    source: str | Path | bytes | np.ndarray, size: int, max_pixels: int = MAX_PIXELS, via: int | None = None
) -> np.ndarray:
    """Decode (unless already an array) and resize one slice to a ``size x size`` uint8 array.

    ``via`` is the size the training images were prepared at (the card's ``prepared_size``).
    A model trained at another size saw original -> ``via`` -> ``size``; resizing through
    ``via`` gives it exactly those pixels, not a one-step resize that differs by a few grey
    levels.
    """
    gray = source if isinstance(source, np.ndarray) else read_gray(source, max_pixels)
    if via is not None and via != size:
        gray = resize(gray, via)
    return resize(gray, size)


def stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack uint8 arrays of shape (H, W) into a uint8 tensor of shape (N, 1, H, W)."""
    return torch.from_numpy(np.stack(arrays)).unsqueeze(1)


def to_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float32 in [0, 1], the input every model and export takes."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()
