"""Where a saliency map points, scored against a tumour's bounding box.

Two scores, both standard in the explanation literature and both computed per slice:

* **pointing game**: whether the map's maximum falls inside the box, grown by a tolerance
  (width and height each multiplied by ``1 + tolerance`` about the box's centre; boxes made
  from another copy of a slice are off by a few pixels);
* **energy inside the box**: the share of the map's positive mass inside the (ungrown) box.

Two baselines put any score in context: a **centre prior** (a fixed Gaussian at the image
centre, what a model that knows nothing but "tumours are not in the corners" would show) and
a **uniform map** (its maximum is anywhere: its pointing-game hit rate is the grown box's
share of the image, and its energy the box's share).

The box file is ``boxes.csv`` of the external folder: ``file`` (relative to the folder),
``label``, ``x_center``, ``y_center``, ``width``, ``height`` (fractions of the image, origin
top left) and ``half`` (``select`` or ``report``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainmri.errors import BrainMRIError

BOX_COLUMNS = ("file", "label", "x_center", "y_center", "width", "height", "half")
HALVES = ("select", "report")
#: The centre prior's standard deviation, as a fraction of the image side.
CENTRE_SIGMA = 0.25


@dataclass(frozen=True)
class Box:
    """A tumour box in fractions of the image (centre, size), as in the CSV."""

    file: str
    label: str
    x: float
    y: float
    w: float
    h: float
    half: str

    def pixels(self, size: int, tolerance: float = 0.0) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive, at ``size`` px, grown by ``tolerance``; at least
        one pixel, clipped to the image."""
        grow = 1.0 + tolerance
        x0, x1 = (self.x - self.w * grow / 2) * size, (self.x + self.w * grow / 2) * size
        y0, y1 = (self.y - self.h * grow / 2) * size, (self.y + self.h * grow / 2) * size
        eps = 1e-6  # 0.25 - 0.15 is 0.0999...: a box edge on a pixel edge stays there
        ix0, iy0 = max(0, math.floor(x0 + eps)), max(0, math.floor(y0 + eps))
        ix1 = min(size, max(ix0 + 1, math.ceil(x1 - eps)))
        iy1 = min(size, max(iy0 + 1, math.ceil(y1 - eps)))
        return ix0, iy0, ix1, iy1

    def mask(self, size: int, tolerance: float = 0.0) -> np.ndarray:
        x0, y0, x1, y1 = self.pixels(size, tolerance)
        m = np.zeros((size, size), dtype=bool)
        m[y0:y1, x0:x1] = True
        return m


def read_boxes(path: str | Path) -> list[Box]:
    """The boxes of a CSV, checked: one clear line for a file that is not a box file."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = set(BOX_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise BrainMRIError(f"{path} is not a box file: it lacks columns {', '.join(sorted(missing))}")
            rows = list(reader)
    except OSError as exc:
        raise BrainMRIError(f"cannot read box file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BrainMRIError(f"{path} is not a readable box file ({exc})") from None
    boxes = []
    for i, r in enumerate(rows, start=2):
        try:
            values = [float(r[k]) for k in ("x_center", "y_center", "width", "height")]
        except ValueError:
            raise BrainMRIError(f"{path}, line {i}: box coordinates must be numbers") from None
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values) or values[2] <= 0 or values[3] <= 0:
            raise BrainMRIError(f"{path}, line {i}: box coordinates must be fractions of the image in 0..1")
        if r["half"] not in HALVES:
            raise BrainMRIError(f"{path}, line {i}: half must be {' or '.join(HALVES)}, got {r['half']!r}")
        boxes.append(Box(r["file"], r["label"], *values, r["half"]))
    if not boxes:
        raise BrainMRIError(f"box file {path} has no rows")
    return boxes


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum; ties are broken towards the centre of mass of the
    tied pixels, so that a flat map does not point at its top-left corner."""
    top = heat >= heat.max() - 1e-12
    if top.sum() == 1:
        r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
        return int(r), int(c)
    rows, cols = np.nonzero(top)
    r0, c0 = rows.mean(), cols.mean()
    k = int(np.argmin((rows - r0) ** 2 + (cols - c0) ** 2))
    return int(rows[k]), int(cols[k])


def pointing_hit(heat: np.ndarray, box: Box, tolerance: float) -> bool:
    r, c = peak(heat)
    return bool(box.mask(heat.shape[0], tolerance)[r, c])


def energy_inside(heat: np.ndarray, box: Box) -> float:
    """Share of the map's positive mass inside the box (0 for an all-zero map)."""
    pos = np.clip(heat, 0.0, None)
    total = float(pos.sum())
    return float(pos[box.mask(heat.shape[0])].sum()) / total if total > 0 else 0.0


def miss_distance(heat: np.ndarray, box: Box) -> float:
    """How far the peak lies outside the box, in fractions of the image side (0 inside)."""
    size = heat.shape[0]
    r, c = peak(heat)
    x0, y0, x1, y1 = box.pixels(size)
    dx = max(x0 - c, 0, c - (x1 - 1))
    dy = max(y0 - r, 0, r - (y1 - 1))
    return float(math.hypot(dx, dy)) / size


def centre_prior(size: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """A Gaussian at the image centre, peak 1."""
    grid = (np.arange(size) + 0.5) / size - 0.5
    g = np.exp(-(grid**2) / (2 * sigma**2))
    return np.outer(g, g)


def uniform_scores(box: Box, size: int, tolerance: float) -> tuple[float, float]:
    """A uniform map's expected pointing-game hit (the grown box's share of the image) and
    its energy inside the box (the box's share)."""
    return float(box.mask(size, tolerance).mean()), float(box.mask(size).mean())


def occlude(image: np.ndarray, rect: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """A copy of ``image`` (H, W) with ``rect`` (x0, y0, x1, y1) set to ``fill``."""
    out = image.copy()
    x0, y0, x1, y1 = rect
    out[y0:y1, x0:x1] = fill
    return out


def control_rect(rect: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    """A rectangle of the same size as ``rect`` that does not overlap it: its mirror image
    across the vertical midline (the other hemisphere) when that is clear of it, otherwise
    the same rectangle moved vertically to the far half."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    mx0 = size - x1
    if mx0 >= x1 or mx0 + w <= x0:
        return mx0, y0, mx0 + w, y1
    ny0 = 0 if y0 >= size - y1 else size - h
    if ny0 + h <= y0 or ny0 >= y1:
        return x0, ny0, x1, ny0 + h
    return (0 if x0 >= size - x1 else size - w), ny0, (w if x0 >= size - x1 else size), ny0 + h
