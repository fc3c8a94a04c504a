"""A prepared folder (what ``brainmri data prepare`` writes, :mod:`brainmri.data.prepare`): its
manifest of every source file, its kept images, and one side of a split decoded into memory;
and the check of outside images against a run's training data.

:class:`PreparedFolder` holds a folder's two records, ``manifest.csv`` and ``prepare.json``,
read once. Every function here takes either a folder path or a :class:`PreparedFolder`; a
caller that asks several questions of one folder (a training run: its split, its groups, its
prepared size) opens it once and passes it along.

Splits are drawn in :mod:`brainmri.data.splits` and written as :mod:`brainmri.data.splitfile` files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import torch

from brainmri.data.groups import PATIENT_COLUMN, units_for
from brainmri.data.manifest import MANIFEST, ManifestRow
from brainmri.data.splitfile import read_split, select_split
from brainmri.errors import BrainMRIError
from brainmri.io.images import ImageError, read_gray
from brainmri.io.preprocess import stack, to_array
from brainmri.labels import CLASSES

PREPARE_JSON = "prepare.json"


@dataclass(frozen=True)
class PreparedFolder:
    """A prepared folder with its records read once: ``manifest`` (every row of
    ``manifest.csv``, every source file, kept or not) and ``info`` (``prepare.json``: settings
    and counts; empty for a folder without one). Rows are shared: read them, do not change them."""

    path: Path
    manifest: tuple[ManifestRow, ...]
    info: Mapping[str, Any]

    @classmethod
    def open(cls, prepared: Prepared) -> PreparedFolder:
        """The folder's records (an already opened folder is returned as it is)."""
        if isinstance(prepared, PreparedFolder):
            return prepared
        path = Path(prepared)
        manifest = tuple(_read_manifest(path))
        info_path = path / PREPARE_JSON
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        return cls(path, manifest, info)

    @property
    def settings(self) -> Mapping[str, Any]:
        """The settings prepare recorded in ``prepare.json``."""
        if not self.info:
            raise BrainMRIError(f"{self.path} has no {PREPARE_JSON}: not a finished prepared folder")
        return self.info["settings"]

    @property
    def size(self) -> int | None:
        """The image size prepare wrote (None for a folder without ``prepare.json``)."""
        return int(self.settings["size"]) if self.info else None

    @property
    def source(self) -> Path:
        """The source folder prepare read."""
        return Path(self.settings["source"])


#: A prepared folder: its path, or its records already read.
Prepared: TypeAlias = "str | Path | PreparedFolder"


def folder_path(prepared: Prepared) -> Path:
    return prepared.path if isinstance(prepared, PreparedFolder) else Path(prepared)


# --- what another folder shares with a run's training images ----------------------


def training_overlap(
    prepared: Prepared, split_file: str | Path, hashes: Sequence[tuple[str, str]], fold: int | None = None
) -> list[dict[str, Any] | None]:
    """For each (pixel hash, phash) of an outside image, the source file of the run's training
    data it duplicates (exactly, or within prepare's phash threshold), else None.

    Evaluating on images the model was trained on, or on copies of them, inflates an
    "external" score: public MRI sets are often re-shuffled copies of one another. The
    reference is every source file whose duplicate group lies on the training side of the
    split (``train`` or ``val``), including the duplicates that prepare removed.
    """
    folder = PreparedFolder.open(prepared)
    threshold = int(folder.settings["phash_threshold"])
    rows = read_split(split_file)
    training = select_split(rows, "train", fold) + ([] if "fold" in rows[0] else select_split(rows, "val"))
    # The split's group column may name patient units (--groups); the duplicate groups of its
    # rows are looked up by path (a prepared PNG, or the source file of a random split).
    manifest = folder.manifest
    source = folder.source
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


def read_manifest(prepared: Prepared) -> list[ManifestRow]:
    """All rows of ``prepared/manifest.csv`` (every source file, kept or not), as new dicts."""
    return [r.copy() for r in PreparedFolder.open(prepared).manifest]


def _read_manifest(prepared: Path) -> list[ManifestRow]:
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
        return [cast(ManifestRow, row) for row in reader]


def kept_rows(
    prepared: Prepared, groups: str | Path | None = None, groups_missing: str = "error"
) -> list[dict[str, str]]:
    """The kept images of a prepared folder, sorted by path so that splits never depend on
    the order in which files were listed.

    ``group`` is what a split keeps on one side: the duplicate group, or, where patient groups
    are known (``groups``, or those prepare recorded), the union of duplicate and patient
    groups (:func:`brainmri.data.groups.split_units`)."""
    folder = PreparedFolder.open(prepared)
    prepared = folder.path
    units = units_for(folder.manifest, groups, groups_missing, str(prepared))
    # New rows, to be split: each manifest row as plain text columns, its group then set.
    rows = [cast(dict[str, str], r.copy()) for r in folder.manifest if r["status"] == "kept"]
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


def has_patient_groups(prepared: Prepared) -> bool:
    """Whether prepare recorded ``--groups`` for this folder (its manifest names patients)."""
    return any(r.get(PATIENT_COLUMN) for r in PreparedFolder.open(prepared).manifest)


# --- splitting ----------------------------------------------------------------------


def prepared_size(prepared: Prepared) -> int | None:
    """The image size recorded in ``prepare.json`` (None if the folder has none)."""
    if isinstance(prepared, PreparedFolder):
        return prepared.size
    path = Path(prepared) / PREPARE_JSON
    if not path.is_file():
        return None
    return int(json.loads(path.read_text(encoding="utf-8"))["settings"]["size"])


def load_split(
    prepared: Prepared,
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
    given, prepared = prepared, folder_path(prepared)
    rows = select_split(read_split(split_file), side, fold)
    if not rows:
        raise BrainMRIError(f"the {side} side of {split_file} is empty")
    for r in rows:
        if r["label"] not in CLASSES:
            raise BrainMRIError(f"{split_file}: unknown label {r['label']!r} for {r['path']}")

    via = prepared_size(given)

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
