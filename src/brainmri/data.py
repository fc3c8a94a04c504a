"""Read, prepare and split a brain-MRI dataset without leaking duplicates across splits.

``prepare`` turns any folder of class sub-folders into 8-bit grayscale PNGs of one size and a
``manifest.csv`` that records every source file, its hashes, its duplicate group and whether
it was kept. Splits are made from the manifest and are group-aware, so an image and its
(near) duplicate never end up on both sides of a train/test split.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from brainmri.checkpoint import atomic_write_text
from brainmri.errors import BrainMRIError
from brainmri.images import ImageError, read_gray
from brainmri.labels import CLASSES
from brainmri.preprocess import resize, stack

MANIFEST = "manifest.csv"
PREPARE_JSON = "prepare.json"
MANIFEST_COLUMNS = (
    "source_path",
    "label",
    "output_path",
    "width",
    "height",
    "mode",
    "pixel_hash",
    "phash",
    "group",
    "status",
    "source_split",
    "duplicate_of",
)
SPLIT_COLUMNS = ("path", "label", "group", "side")
KFOLD_COLUMNS = ("path", "label", "group", "fold")


# --- reading a prepared folder -------------------------------------------------------


def read_manifest(prepared: str | Path) -> list[dict[str, str]]:
    """All rows of ``prepared/manifest.csv`` (every source file, kept or not)."""
    path = Path(prepared) / MANIFEST
    if not Path(prepared).is_dir():
        raise BrainMRIError(f"prepared folder not found: {prepared} (run 'brainmri data prepare SRC OUT' first)")
    if not path.is_file():
        raise BrainMRIError(f"{prepared} has no {MANIFEST}; is it a folder made by 'brainmri data prepare'?")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"output_path", "label", "group", "status"} - set(reader.fieldnames or ())
        if missing:
            raise BrainMRIError(f"{path} lacks columns {', '.join(sorted(missing))}")
        return list(reader)


def kept_rows(prepared: str | Path) -> list[dict[str, str]]:
    """The kept images of a prepared folder, sorted by path so that splits never depend on
    the order in which files were listed."""
    rows = [r for r in read_manifest(prepared) if r["status"] == "kept"]
    if not rows:
        raise BrainMRIError(f"{prepared}/{MANIFEST} lists no kept images")
    for r in rows:
        if r["label"] not in CLASSES:
            raise BrainMRIError(f"{prepared}/{MANIFEST}: unknown label {r['label']!r} for {r['output_path']}")
        if not r["group"]:
            r["group"] = r["output_path"]
    return sorted(rows, key=lambda r: r["output_path"])


# --- splitting ----------------------------------------------------------------------


def _group_labels(rows: Sequence[dict[str, str]]) -> dict[str, tuple[str, int]]:
    """group -> (label of its first row, number of rows), groups in sorted order."""
    out: dict[str, tuple[str, int]] = {}
    for r in rows:
        label, n = out.get(r["group"], (r["label"], 0))
        out[r["group"]] = (label, n + 1)
    return dict(sorted(out.items()))


def make_split(prepared: str | Path, test_size: float = 0.2, seed: int = 42) -> list[dict[str, str]]:
    """A stratified train/test split of the kept images in which no duplicate group spans both
    sides.

    Groups are shuffled per label with NumPy's PCG64 generator (identical on every platform)
    and moved to the test side until it holds ``round(test_size * n)`` images of that label.
    """
    if not 0.0 < test_size < 1.0:
        raise BrainMRIError(f"--test-size must be between 0 and 1, got {test_size}")
    rows = kept_rows(prepared)
    groups = _group_labels(rows)
    rng = np.random.default_rng(seed)
    test_groups: set[str] = set()
    for label in CLASSES:
        names = [g for g, (lab, _) in groups.items() if lab == label]
        if not names:
            continue
        target = round(test_size * sum(groups[g][1] for g in names))
        taken = 0
        for i in rng.permutation(len(names)):
            if taken >= target:
                break
            test_groups.add(names[i])
            taken += groups[names[i]][1]
    if not test_groups or len(test_groups) == len(groups):
        raise BrainMRIError(f"too few images ({len(rows)}) for a {1 - test_size:.0%}/{test_size:.0%} split")
    return [
        {"path": r["output_path"], "label": r["label"], "group": r["group"], "side": "test"}
        if r["group"] in test_groups
        else {"path": r["output_path"], "label": r["label"], "group": r["group"], "side": "train"}
        for r in rows
    ]


def make_kfold(prepared: str | Path, k: int = 5, seed: int = 42) -> list[dict[str, str]]:
    """Stratified group k-fold assignment (``fold`` 0..k-1) for cross-validation."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise BrainMRIError(f"--k must be at least 2, got {k}")
    rows = kept_rows(prepared)
    n_groups = len({r["group"] for r in rows})
    if n_groups < k:
        raise BrainMRIError(f"cannot make {k} folds from {n_groups} image groups")
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    folds = np.empty(len(rows), dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test_idx) in enumerate(cv.split(np.zeros(len(rows)), y, groups)):
        folds[test_idx] = fold
    return [
        {"path": r["output_path"], "label": r["label"], "group": r["group"], "fold": str(int(f))}
        for r, f in zip(rows, folds, strict=True)
    ]


def write_split(rows: Sequence[dict[str, str]], path: str | Path) -> Path:
    """Write split rows (single split or k-fold, told apart by their columns) atomically."""
    if not rows:
        raise BrainMRIError("refusing to write an empty split")
    columns = KFOLD_COLUMNS if "fold" in rows[0] else SPLIT_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        atomic_write_text(path, buf.getvalue())
    except OSError as exc:
        raise BrainMRIError(f"cannot write split file {path}: {exc.strerror or exc}") from None
    return Path(path)


def read_split(path: str | Path) -> list[dict[str, str]]:
    """Read a split file written by :func:`write_split`, checking its columns."""
    path = Path(path)
    if not path.is_file():
        raise BrainMRIError(f"split file not found: {path} (make one with 'brainmri data split PREPARED')")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = tuple(reader.fieldnames or ())
        if fields not in (SPLIT_COLUMNS, KFOLD_COLUMNS):
            raise BrainMRIError(
                f"{path} is not a split file: columns {','.join(fields) or '(none)'}, expected "
                f"{','.join(SPLIT_COLUMNS)} or {','.join(KFOLD_COLUMNS)}"
            )
        rows = list(reader)
    if not rows:
        raise BrainMRIError(f"split file {path} has no rows")
    return rows


def select_split(rows: Sequence[dict[str, str]], side: str, fold: int | None = None) -> list[dict[str, str]]:
    """The rows of one side; for k-fold files ``fold`` is the test fold and the rest is train."""
    if side not in ("train", "test"):
        raise BrainMRIError(f"side must be 'train' or 'test', got {side!r}")
    if "fold" in rows[0]:
        if fold is None:
            raise BrainMRIError("this is a k-fold split file: choose a fold")
        folds = sorted({int(r["fold"]) for r in rows})
        if fold not in folds:
            raise BrainMRIError(f"fold {fold} not in split file (folds {folds[0]}..{folds[-1]})")
        return [r for r in rows if (int(r["fold"]) == fold) == (side == "test")]
    if fold is not None:
        raise BrainMRIError("fold given, but the split file is a single train/test split")
    return [r for r in rows if r["side"] == side]


def prepared_size(prepared: str | Path) -> int | None:
    """The image size recorded in ``prepare.json`` (None if the folder has none)."""
    path = Path(prepared) / PREPARE_JSON
    if not path.is_file():
        return None
    return int(json.loads(path.read_text(encoding="utf-8"))["settings"]["size"])


def load_split(
    prepared: str | Path,
    split_file: str | Path,
    side: str,
    fold: int | None = None,
    size: int | None = None,
    workers: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode one side of a split into memory: uint8 images (N, 1, H, W), int64 labels, paths.

    Prepared PNGs already have the prepared size, so they are resized (with the shared
    :func:`brainmri.preprocess.resize`) only when ``size`` asks for another one.
    """
    prepared = Path(prepared)
    rows = select_split(read_split(split_file), side, fold)
    if not rows:
        raise BrainMRIError(f"the {side} side of {split_file} is empty")
    for r in rows:
        if r["label"] not in CLASSES:
            raise BrainMRIError(f"{split_file}: unknown label {r['label']!r} for {r['path']}")

    def load(rel: str) -> np.ndarray:
        try:
            gray = read_gray(prepared / rel)
        except ImageError as exc:
            raise BrainMRIError(f"{prepared / rel}: {exc}") from None
        if size is not None:
            gray = resize(gray, size)
        return gray

    paths = [r["path"] for r in rows]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(load, paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise BrainMRIError(f"images in {prepared} differ in size ({sorted(shapes)[:3]}...); pass size=")
    labels = torch.tensor([CLASSES.index(r["label"]) for r in rows], dtype=torch.int64)
    return stack(arrays), labels, paths
