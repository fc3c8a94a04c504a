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
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))


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
    """uint8 (N, 1, H, W) -> float32 in [0, 1], the input every model and export takes.

    On the CPU the division runs in NumPy, which gives the same floats (IEEE division, each
    of the 256 values checked in the tests) without opening an OpenMP parallel region: PyTorch's
    OpenMP threads keep spinning for a while after one, and on a 2-core machine they took the
    cores from ONNX Runtime's threads during the forward pass that follows (a single slice
    through an ONNX export: 56-68 ms instead of 51, docs/results/onnx-latency-2).
    """
    if batch.dtype != torch.uint8:
        return batch.float()
    if batch.device.type != "cpu":
        return batch.float().div_(255.0)
    floats = batch.numpy().astype(np.float32)  # a new array: divided in place
    floats /= np.float32(255.0)
    return torch.from_numpy(floats)
