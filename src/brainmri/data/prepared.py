"""A prepared folder (what ``brainmri data prepare`` writes, :mod:`brainmri.data.prepare`): its
manifest of every source file, its kept images, and one side of a split decoded into memory;
and the check of outside images against a run's training data.

Splits are drawn in :mod:`brainmri.data.splits` and written as :mod:`brainmri.data.splitfile` files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmri.data.groups import PATIENT_COLUMN, units_for
from brainmri.data.splitfile import read_split, select_split
from brainmri.errors import BrainMRIError
from brainmri.io.images import ImageError, read_gray
from brainmri.io.preprocess import stack, to_array
from brainmri.labels import CLASSES

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


# --- scanning a source folder -------------------------------------------------------


# --- preparing ----------------------------------------------------------------------


def training_overlap(
    prepared: str | Path, split_file: str | Path, hashes: Sequence[tuple[str, str]], fold: int | None = None
) -> list[dict[str, Any] | None]:
    """For each (pixel hash, phash) of an outside image, the source file of the run's training
    data it duplicates (exactly, or within prepare's phash threshold), else None.

    Evaluating on images the model was trained on, or on copies of them, inflates an
    "external" score: public MRI sets are often re-shuffled copies of one another. The
    reference is every source file whose duplicate group lies on the training side of the
    split (``train`` or ``val``), including the duplicates that prepare removed.
    """
    info = json.loads((Path(prepared) / PREPARE_JSON).read_text(encoding="utf-8"))
    threshold = int(info["settings"]["phash_threshold"])
    rows = read_split(split_file)
    training = select_split(rows, "train", fold) + ([] if "fold" in rows[0] else select_split(rows, "val"))
    # The split's group column may name patient units (--groups); the duplicate groups of its
    # rows are looked up by path (a prepared PNG, or the source file of a random split).
    manifest = read_manifest(prepared)
    source = Path(info["settings"]["source"])
    dup_of = {str(source / m["source_path"]): m["group"] for m in manifest if m["group"]}
    dup_of.update({m["output_path"]: m["group"] for m in manifest if m["output_path"]})
    training_groups = {dup_of.get(r["path"], r["group"]) for r in training}
    reference = [r for r in manifest if r["group"] in training_groups and r["pixel_hash"]]
    exact = {r["pixel_hash"]: r["source_path"] for r in reference}
    bits = np.array([int(r["phash"], 16) for r in reference], dtype=np.uint64)
    out: list[dict[str, Any] | None] = []
    for pixel_hash, phash in hashes:
        if pixel_hash in exact:
            out.append({"matches": exact[pixel_hash], "phash_distance": 0, "exact": True})
            continue
        if threshold >= 0 and len(bits):
            dist = np.bitwise_count(bits ^ np.uint64(int(phash, 16)))
            i = int(dist.argmin())
            if dist[i] <= threshold:
                out.append({"matches": reference[i]["source_path"], "phash_distance": int(dist[i]), "exact": False})
                continue
        out.append(None)
    return out


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


def kept_rows(
    prepared: str | Path, groups: str | Path | None = None, groups_missing: str = "error"
) -> list[dict[str, str]]:
    """The kept images of a prepared folder, sorted by path so that splits never depend on
    the order in which files were listed.

    ``group`` is what a split keeps on one side: the duplicate group, or, where patient groups
    are known (``groups``, or those prepare recorded), the union of duplicate and patient
    groups (:func:`brainmri.data.groups.split_units`)."""
    manifest = read_manifest(prepared)
    units = units_for(manifest, groups, groups_missing, str(prepared))
    rows = [r for r in manifest if r["status"] == "kept"]
    if not rows:
        raise BrainMRIError(f"{prepared}/{MANIFEST} lists no kept images")
    for r in rows:
        if r["label"] not in CLASSES:
            raise BrainMRIError(f"{prepared}/{MANIFEST}: unknown label {r['label']!r} for {r['output_path']}")
        if units is not None:
            r["group"] = units[r["source_path"]]
        if not r["group"]:
            r["group"] = r["output_path"]
    return sorted(rows, key=lambda r: r["output_path"])


def has_patient_groups(prepared: str | Path) -> bool:
    """Whether prepare recorded ``--groups`` for this folder (its manifest names patients)."""
    return any(r.get(PATIENT_COLUMN) for r in read_manifest(prepared))


# --- splitting ----------------------------------------------------------------------


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
    :func:`brainmri.io.preprocess.resize`) only when ``size`` asks for another one.
    """
    prepared = Path(prepared)
    rows = select_split(read_split(split_file), side, fold)
    if not rows:
        raise BrainMRIError(f"the {side} side of {split_file} is empty")
    for r in rows:
        if r["label"] not in CLASSES:
            raise BrainMRIError(f"{split_file}: unknown label {r['label']!r} for {r['path']}")

    via = prepared_size(prepared)

    def load(rel: str) -> np.ndarray:
        # A relative path is a prepared PNG; an absolute one a source file that prepare set
        # aside (a ``--split-policy random`` split), resized through the prepared size as the
        # PNGs were.
        try:
            gray = read_gray(prepared / rel)
        except ImageError as exc:
            raise BrainMRIError(f"{prepared / rel}: {exc}") from None
        target = size or via
        return gray if target is None else to_array(gray, target, via=via)

    paths = [r["path"] for r in rows]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(load, paths))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise BrainMRIError(f"images in {prepared} differ in size ({sorted(shapes)[:3]}...); pass size=")
    labels = torch.tensor([CLASSES.index(r["label"]) for r in rows], dtype=torch.int64)
    return stack(arrays), labels, paths
