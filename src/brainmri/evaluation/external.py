"""What an external score can and cannot say, computed from an evaluation's predictions.

The external folder's ``normal`` slices all come from one source (Br35H) and its tumours
from another (figshare), so a model can tell ``normal`` apart by source style alone. And it
holds near-duplicate slices, which a plain bootstrap counts as independent evidence. So
beside the plain accuracy this gives:

* per-source figures (the tumours of one source, the normals of the other);
* **tumour-only 3-class accuracy**: on tumour slices, the most probable of the three tumour
  classes, a figure that the normals' source style cannot inflate;
* **tumours called normal** (the clinically worst error), as a count and a rate;
* every CI by a **cluster bootstrap** over the folder's near-duplicate groups
  (:func:`near_duplicate_groups`: the exact and perceptual-hash grouping that prepare uses).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data.hashing import duplicate_groups, image_hashes
from brainmri.data.scan import scan
from brainmri.files import atomic_write_text
from brainmri.io.images import ImageError, read_gray
from brainmri.io.preprocess import to_array
from brainmri.metrics.paired import bootstrap_ratio

NORMAL = "normal"
#: The sources of the external folder, by class (its datasets README).
SOURCES = {"normal": "Br35H", "tumour": "figshare (Cheng et al.)"}


def near_duplicate_groups(folder: str | Path, threshold: int = 2, size: int = 256) -> dict[str, str]:
    """``path -> group`` for every readable image of a class-folder tree (paths relative to
    it), grouped as prepare groups duplicates: exact pixel copies and perceptual hashes within
    ``threshold`` bits, at ``size`` px. A singleton is its own group."""
    folder = Path(folder)
    paths, exact, perceptual = [], [], []
    for row in scan(folder):
        try:
            arr = to_array(read_gray(folder / row["source_path"]), size)
        except ImageError:
            continue
        e, p = image_hashes(arr)
        paths.append(row["source_path"])
        exact.append(e)
        perceptual.append(p)
    first = duplicate_groups(exact, perceptual, threshold)
    return {path: paths[g] for path, g in zip(paths, first, strict=True)}


def write_groups(groups: dict[str, str], path: str | Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "group"])
    writer.writerows(sorted(groups.items()))
    atomic_write_text(path, buf.getvalue())


def read_groups_csv(path: str | Path) -> dict[str, str]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return {r["file"]: r["group"] for r in csv.DictReader(fh)}


def _rate(values: np.ndarray, clusters: Sequence[str] | None, n_bootstrap: int) -> dict[str, Any]:
    if len(values) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    est, low, high = bootstrap_ratio(values, clusters=clusters, n_resamples=n_bootstrap)
    return {"value": est, "ci95": [low, high], "n": int(len(values))}


#: The figures of :func:`breakdown`: name -> (which images, what counts as 1).
FIGURES = (
    "accuracy",
    "figshare tumours: sensitivity (a tumour called a tumour)",
    "figshare tumours: accuracy (the right tumour class)",
    "Br35H normals: specificity",
    "tumour-only 3-class accuracy",
    "tumours called normal",
)


def indicators(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per image, for each figure: (whether the image counts, its 0/1 value)."""
    classes = list(classes)
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    pred = proba.argmax(1)
    normal = classes.index(NORMAL)
    tumour = y_true != normal
    tumour_cols = [i for i in range(len(classes)) if i != normal]
    pred3 = np.array(tumour_cols)[proba[:, tumour_cols].argmax(1)]
    every = np.ones(len(y_true), dtype=bool)
    return dict(
        zip(
            FIGURES,
            (
                (every, (pred == y_true).astype(float)),
                (tumour, (pred != normal).astype(float)),
                (tumour, (pred == y_true).astype(float)),
                (~tumour, (pred == y_true).astype(float)),
                (tumour, (pred3 == y_true).astype(float)),
                (tumour, (pred == normal).astype(float)),
            ),
            strict=True,
        )
    )


def breakdown(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    paths: Sequence[str],
    groups: dict[str, str] | None = None,
    n_bootstrap: int = 1000,
) -> dict[str, Any]:
    """The figures above for one model, from one or more runs scored on the same images
    (``runs``: (y_true, proba) pairs in the order of ``paths``): each image's value averaged
    over the runs, with a 95% bootstrap CI over the images, clustered by ``groups`` (the
    near-duplicate groups) when given, next to the plain one for accuracy."""
    per_run = [indicators(y, p, classes) for y, p in runs]
    clusters = np.array([(groups or {}).get(p, p) for p in paths])
    out: dict[str, Any] = {"n": len(paths), "runs": len(runs), "clustered": groups is not None}
    out["near_duplicate_groups"] = {"clusters": len(set(clusters.tolist()))}
    for name in FIGURES:
        mask = per_run[0][name][0]
        values = np.mean([r[name][1] for r in per_run], axis=0)[mask]
        out[name] = _rate(values, clusters[mask].tolist() if groups else None, n_bootstrap)
        if name == "tumours called normal":
            out[name]["count_mean"] = float(values.sum())
    out["accuracy, plain bootstrap"] = _rate(np.mean([r["accuracy"][1] for r in per_run], axis=0), None, n_bootstrap)
    return out
