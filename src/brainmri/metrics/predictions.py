"""A run's per-image predictions as CSV (``predictions.csv``, ``val_predictions.csv``, an
evaluation's ``eval/<name>/predictions.csv``): one row per image with its path, label,
prediction and every class's probability, so that metrics, figures, calibration and error
analysis can be redone without the model. Written by training (the validation side) and
evaluation; read by reports and the comparison tables.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainmri.files import atomic_write_text


def write_labelled_predictions(
    path: Path, paths: Sequence[str], y_true: np.ndarray, proba: np.ndarray, classes, warnings=None
) -> None:
    """One row per image, so figures and error analysis can be redone without the model; with
    ``warnings`` (``evaluate --data``) a last column ``input_warning`` (:mod:`brainmri.inference.input_check`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes], *(["input_warning"] * bool(warnings))])
    for i, (p, t, row) in enumerate(zip(paths, y_true, proba, strict=True)):
        extra = [warnings[i] or ""] if warnings else []
        writer.writerow([p, classes[int(t)], classes[int(row.argmax())], *[f"{v:.6g}" for v in row], *extra])
    atomic_write_text(path, buf.getvalue())


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(y_true, proba, paths, classes) from a ``predictions.csv``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    cols = [i for i, h in enumerate(header) if i >= 3 and h.startswith("p_")]
    classes = [header[i][2:] for i in cols]
    y_true = np.array([classes.index(r[1]) for r in rows], dtype=np.int64)
    proba = np.array([[float(r[i]) for i in cols] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
    return y_true, proba, [r[0] for r in rows], classes
