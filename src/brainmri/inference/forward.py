"""The one inference path: a model (PyTorch or ONNX Runtime) and a batch of slices in, class
probabilities out.

Validation during training, ``brainmri evaluate``, :class:`brainmri.inference.predictor.Predictor`, the
web app and int8 calibration all call :func:`probabilities`, so that a run's recorded
validation numbers are the ones ``evaluate`` reports for the same checkpoint. It runs in fp32
unless asked otherwise (docs/precision.md): a bf16 forward pass differs from machine to
machine in the third decimal of the loss. :func:`probabilities_with` is the same pass that also
returns something computed from the penultimate features (the input check's score).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np
import torch

from brainmri.errors import BrainMRIError
from brainmri.io.preprocess import to_input
from brainmri.metrics.classification import cross_entropy
from brainmri.runtime import autocast

if TYPE_CHECKING:
    import onnxruntime

    from brainmri.models.build import Classifier

#: What the inference path runs: a PyTorch model (a :class:`brainmri.models.build.Classifier`
#: where features are asked for) or an ONNX Runtime session of a brainmri export.
Model: TypeAlias = "torch.nn.Module | onnxruntime.InferenceSession"


def is_onnx_session(model: object) -> bool:
    """An ONNX Runtime session (duck-typed, so that onnxruntime is imported only when used)."""
    return hasattr(model, "run") and hasattr(model, "get_inputs") and not isinstance(model, torch.nn.Module)


def _logits(model: Model, batch: torch.Tensor, device: torch.device | None, precision: str) -> torch.Tensor:
    return _forward(model, batch, device, precision, None)[0]


#: What :func:`probabilities_with` computes besides the probabilities: for a PyTorch model a
#: function of the pooled backbone features (the penultimate layer), for an ONNX session the
#: name of another output of its graph.
Extra = Callable[[torch.Tensor], torch.Tensor] | str


def _forward(
    model: Model, batch: torch.Tensor, device: torch.device | None, precision: str, extra: Extra | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and, from the same forward pass, ``extra`` (computed in fp32, outside autocast)."""
    if is_onnx_session(model):
        session = cast("onnxruntime.InferenceSession", model)
        names = ["logits"] if extra is None else ["logits", str(extra)]
        out = session.run(names, {"image": batch.cpu().numpy()})
        return torch.from_numpy(out[0]).float(), (None if extra is None else torch.from_numpy(out[1]))
    if isinstance(extra, str):
        raise BrainMRIError(f"a PyTorch model has no output {extra!r}")
    net = cast("Classifier", model)  # features and head are asked of it only with ``extra``
    dev = device if device is not None else next(net.parameters()).device
    ctx = autocast(precision, dev) if precision != "fp32" else contextlib.nullcontext()
    with ctx:
        if extra is None:
            return net(batch.to(dev, non_blocking=True)).float().cpu(), None
        features = net.features(batch.to(dev, non_blocking=True))
        logits = net.head(features)
    return logits.float().cpu(), extra(features.float()).cpu()


def probabilities(
    model: Model,
    images: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 64,
    flip: bool = False,
    precision: str = "fp32",
    device: torch.device | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Softmax probabilities (N, C), float64, for slices (N, 1, H, W): uint8, or float in [0, 1].

    ``model`` is a ``torch.nn.Module`` (put in eval mode here; the caller restores training
    mode) or an ONNX Runtime session of a brainmri export (input ``image``, output
    ``logits``). ``flip`` averages the probabilities of each slice and its mirror image (the
    model card's ``tta``). ``precision`` is ``fp32`` or a resolved autocast precision (bf16,
    fp16) for PyTorch models. ``temperature`` is the model card's (:mod:`brainmri.metrics.calibration`),
    applied after flip averaging; it never changes the most probable class.
    """
    return _run(model, images, None, batch_size, flip, precision, device, temperature)[0]


def probabilities_with(
    model: Model,
    images: torch.Tensor | np.ndarray,
    extra: Extra,
    *,
    batch_size: int = 64,
    flip: bool = False,
    precision: str = "fp32",
    device: torch.device | None = None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`probabilities` and, from the same forward pass, ``extra`` of every slice (of the
    slice itself, not its mirror image): e.g. the pooled features (``extra=lambda f: f``) or
    an out-of-distribution score of them (:class:`brainmri.inference.input_check.MahalanobisScore`), or
    for an ONNX session the name of a graph output (``"ood_score"``). A PyTorch model must
    have ``features`` and ``head`` (:class:`brainmri.models.build.Classifier`)."""
    return _run(model, images, extra, batch_size, flip, precision, device, temperature)


@torch.inference_mode()
def _run(
    model: Model,
    images: torch.Tensor | np.ndarray,
    extra: Extra | None,
    batch_size: int,
    flip: bool,
    precision: str,
    device: torch.device | None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    if batch_size < 1:
        raise BrainMRIError(f"--batch-size must be at least 1, got {batch_size}")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.ndim != 4 or images.shape[1] != 1:
        raise BrainMRIError(f"expected slices of shape (N, 1, H, W), got {tuple(images.shape)}")
    if isinstance(model, torch.nn.Module):
        model.eval()
    out, extras = [], []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start : start + batch_size])
        logits, more = _forward(model, batch, device, precision, extra)
        proba = torch.softmax(logits.double(), dim=1)
        if flip:
            mirrored = torch.softmax(_logits(model, batch.flip(-1), device, precision).double(), dim=1)
            proba = (proba + mirrored) / 2
        if temperature != 1.0:
            proba = torch.softmax(torch.log(proba.clamp_min(1e-300)) / temperature, dim=1)
        out.append(proba)
        if more is not None:
            extras.append(more)
    if not out:
        return np.zeros((0, 0)), np.zeros((0,))
    return torch.cat(out).numpy(), (torch.cat(extras).numpy() if extras else np.zeros((0,)))


def score(
    model: Model,
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    **kwargs: Any,
) -> dict[str, float]:
    """Loss (mean cross-entropy), accuracy and count of ``images``: what a run records for its
    validation side each epoch, computed exactly as ``evaluate`` computes them."""
    return score_of(probabilities(model, images, **kwargs), labels)


def score_of(proba: np.ndarray, labels: torch.Tensor | np.ndarray) -> dict[str, float]:
    """:func:`score` of probabilities already computed (and their sums, which ranks add up)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "n": 0}
    return {
        "loss": float(cross_entropy(proba, labels).mean()),
        "accuracy": float((proba.argmax(1) == labels).mean()),
        "n": n,
        "loss_sum": float(cross_entropy(proba, labels).sum()),
        "correct": int((proba.argmax(1) == labels).sum()),
    }
