"""The model-independent half of the input check: statistics of the slice itself.

The out-of-distribution score of :mod:`brainmri.inference.input_check` lives in the model's features, so it
is only as good as the model: a weakly trained network maps uniform noise or a photograph close
to its class means, and they pass. What makes an MRI slice recognisable needs no network: a dark
background all round, a bright head roughly centred and in one piece, a smooth grey-level
histogram. :func:`statistics` measures that on every slice (at :data:`STATS_SIZE` px, from the
model's own input array), and :class:`ImageStatisticsScore` is the Mahalanobis distance of those
numbers to the training side's, with a threshold calibrated there as the feature score's is.
(Colour, which the grayscale input no longer shows, is measured when decoding:
:attr:`brainmri.io.images.Decoded.chroma`.)
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainmri.errors import BrainMRIError
from brainmri.io.preprocess import resize

#: Side at which the statistics are measured, whatever the model's input size: small enough
#: to cost well under a millisecond, large enough to see the head's outline.
STATS_SIZE = 64
#: Width of the border ring, as a fraction of the side (MRI: dark background there).
BORDER = 0.08
#: Grey level (0..1) under which a pixel counts as background.
DARK = 0.08
#: What :func:`statistics` measures, in order (kept in the card, checked when it is read).
FEATURES = (
    "mean", "std", "p5", "median", "p95",  # the grey-level distribution
    "dark_share", "border_mean", "border_dark_share", "centre_mean",  # a dark background all round
    "head_area", "head_extent", "head_border_share", "head_share", "head_offset", "components",  # the head
    "gradient", "laplacian",  # texture: noise and text have far more fine structure
)  # fmt: skip


def _otsu(gray: np.ndarray) -> float:
    """Otsu's threshold (0..1) of a uint8 image."""
    p = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p /= p.sum()
    w, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num((mu[-1] * w - mu) ** 2 / (w * (1 - w)), nan=-1.0, posinf=-1.0)
    return float(np.argmax(between)) / 255.0


def _one(gray: np.ndarray) -> list[float]:
    from scipy import ndimage

    small = resize(gray, STATS_SIZE)
    a = small.astype(np.float64) / 255.0
    side = STATS_SIZE
    b = max(1, round(BORDER * side))
    ring = np.ones_like(a, dtype=bool)
    ring[b:-b, b:-b] = False
    foreground = a > max(_otsu(small), DARK)
    labels, n = ndimage.label(foreground)
    head = [0.0, 0.0, 0.0, 0.0, 0.5]  # area, extent, border share, share of the foreground, offset
    if n:
        sizes = ndimage.sum(foreground, labels, range(1, n + 1))
        largest = labels == int(np.argmax(sizes)) + 1
        filled = ndimage.binary_fill_holes(largest)
        ys, xs = np.nonzero(filled)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        head = [
            float(filled.mean()),
            float(filled.sum() / box),
            float((filled & ring).sum() / ring.sum()),
            float(largest.sum() / foreground.sum()),
            float(np.hypot(ys.mean() / side - 0.5, xs.mean() / side - 0.5)),
        ]
    gy, gx = np.gradient(a)
    q5, q50, q95 = np.percentile(a, (5, 50, 95))
    return [
        float(a.mean()), float(a.std()), float(q5), float(q50), float(q95),
        float((a < DARK).mean()), float(a[ring].mean()), float((a[ring] < DARK).mean()),
        float(a[side // 4 : -side // 4, side // 4 : -side // 4].mean()),
        *head, float(np.log1p(n)),
        float(np.hypot(gx, gy).mean()), float(np.abs(ndimage.laplace(a)).mean()),
    ]  # fmt: skip


#: The batches :func:`statistics` measured last, by digest, at most :data:`REMEMBERED` (rows of 17
#: numbers a slice: a few hundred kB). Every model of one comparison calibrates on the same
#: training side and is evaluated on the same external folder, in turn; measuring each once
#: saves about a second a model (0.7 ms a slice).
_measured: OrderedDict[bytes, np.ndarray] = OrderedDict()
REMEMBERED = 8
_lock = threading.Lock()


def statistics(images: Any) -> np.ndarray:
    """uint8 slices, (N, H, W) or (N, 1, H, W), array or tensor -> (N, len(FEATURES)) float64.
    A batch identical to one of the last :data:`REMEMBERED` measured (same shape, same bytes) is
    not measured again."""
    batch = np.asarray(images)
    if batch.ndim == 4:
        batch = batch[:, 0]
    if len(batch) == 0:
        return np.zeros((0, len(FEATURES)))
    batch = np.ascontiguousarray(batch, dtype=np.uint8)
    hashed = hashlib.blake2b(repr(batch.shape).encode(), digest_size=16)
    hashed.update(batch.data)  # the array's own buffer, not a copy
    digest = hashed.digest()
    with _lock:  # the web app predicts from several threads
        rows = _measured.get(digest)
        if rows is not None:
            _measured.move_to_end(digest)
            return rows.copy()
    rows = np.array([_one(img) for img in batch], dtype=np.float64)
    with _lock:
        _measured[digest] = rows
        while len(_measured) > REMEMBERED:
            _measured.popitem(last=False)
    return rows.copy()


@dataclass(frozen=True)
class ImageStatisticsScore:
    """Distance of a slice's :func:`statistics` to the training side's: ``||f @ transform -
    centre||`` (whitened with the training side's shrunk covariance), flagged above ``threshold``.
    Kept in the model card (``input_check.image_statistics``), so that an ONNX export, which
    carries the card, runs it too."""

    transform: np.ndarray  # (D, D)
    centre: np.ndarray  # (D,)
    threshold: float

    def scores(self, images: Any) -> np.ndarray:
        return np.linalg.norm(statistics(images) @ self.transform - self.centre, axis=1)

    def to_entry(self, **extra: Any) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "size": STATS_SIZE,
            "transform": self.transform.tolist(),
            "centre": self.centre.tolist(),
            "threshold": self.threshold,
            **extra,
        }

    @classmethod
    def from_entry(cls, entry: Any) -> ImageStatisticsScore:
        """The score kept in a card, checked: a damaged or hand-edited entry is one clear error."""
        dim = len(FEATURES)
        try:
            if entry["features"] != list(FEATURES) or entry["size"] != STATS_SIZE:
                raise ValueError("other features")
            transform = np.array(entry["transform"], dtype=np.float64)
            centre = np.array(entry["centre"], dtype=np.float64)
            threshold = entry["threshold"]
            ok = (
                transform.shape == (dim, dim)
                and centre.shape == (dim,)
                and np.isfinite(transform).all()
                and np.isfinite(centre).all()
                and not isinstance(threshold, bool)
                and isinstance(threshold, (int, float))
                and 0 < threshold < float("inf")
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BrainMRIError(
                "damaged model card: input_check.image_statistics does not fit this version's image statistics; "
                "run 'brainmri calibrate RUN --overwrite'"
            )
        return cls(transform, centre, float(threshold))
