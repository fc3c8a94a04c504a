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
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text, check_output, current_umask, staging_dir
from brainmri.groups import PATIENT_COLUMN, assign, read_groups, units_for
from brainmri.hashing import decode_for_hashing, duplicate_groups, image_hashes, map_images  # noqa: F401 (API)
from brainmri.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, read_gray
from brainmri.labels import CLASSES, canonical_label, parse_label_map
from brainmri.preprocess import DEFAULT_SIZE, stack, to_array

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


#: Default Hamming distance (of 64-bit perceptual hashes) at or under which two slices count
#: as near duplicates; see docs/data.md for how it was chosen.
PHASH_THRESHOLD = 2

#: Folder names that mark a dataset's own split level above the class folders.
SPLIT_FOLDERS = frozenset({"training", "train", "testing", "test", "validation", "val", "valid"})

#: Split folders whose images a model trains on; the rest of SPLIT_FOLDERS are held out.
TRAIN_FOLDERS = frozenset({"training", "train"})
_TRAIN_FOLDERS = TRAIN_FOLDERS


# --- scanning a source folder -------------------------------------------------------


def _skip(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def scan(src: str | Path, label_map: str | Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """List the image files of a dataset folder with their canonical labels.

    The layout is ``SRC/<class>/...`` or ``SRC/<split>/<class>/...`` (split folders such as
    ``Training/`` or ``test/``); files below a class folder may be nested further. Files are
    picked by suffix (``IMAGE_SUFFIXES``) but decoded by content later, so a misnamed file is
    reported as unreadable rather than silently skipped.
    """
    src = Path(src)
    if not src.exists():
        raise BrainMRIError(f"source folder not found: {src}")
    if not src.is_dir():
        raise BrainMRIError(f"source is not a folder: {src}")
    mapping = parse_label_map(label_map)
    rows: list[dict[str, str]] = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not _skip(d))
        for name in sorted(files):
            if _skip(name) or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = Path(root, name).relative_to(src)
            parts = rel.parts
            split = ""
            if len(parts) > 2 and parts[0].lower() in SPLIT_FOLDERS:
                split, parts = parts[0], parts[1:]
            if len(parts) < 2:
                raise BrainMRIError(
                    f"image {rel.as_posix()} is not inside a class folder; expected SRC/<class>/<image> "
                    "or SRC/<split>/<class>/<image>"
                )
            label = canonical_label(parts[0], mapping)
            rows.append(
                {"source_path": rel.as_posix(), "label": label, "source_split": split, "class_folder": parts[0]}
            )
    if not rows:
        raise BrainMRIError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {src}; expected SRC/<class>/<image> "
            "or SRC/<split>/<class>/<image>"
        )
    return sorted(rows, key=lambda r: r["source_path"])


# --- preparing ----------------------------------------------------------------------


def _output_names(rows: Sequence[dict[str, str]]) -> list[str]:
    """``<label>/<name>.png`` for every row, unique and the same on every machine."""
    used: set[str] = set()
    out = []
    for r in rows:
        parts = list(Path(r["source_path"]).with_suffix("").parts)
        parts.remove(r["class_folder"])
        stem = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts)).strip("_.") or "image"
        name, n = f"{r['label']}/{stem}.png", 1
        while name.lower() in used:
            n += 1
            name = f"{r['label']}/{stem}-{n}.png"
        used.add(name.lower())
        out.append(name)
    return out


def _prepare_one(task: tuple[str, str, int, int]) -> dict[str, str]:
    """Decode, resize, hash and write one slice (runs in a worker process)."""
    src, dst, size, max_pixels = task
    arr, fields = decode_for_hashing(src, size, max_pixels)
    if arr is not None:
        Image.fromarray(arr).save(dst, format="PNG", compress_level=1)  # 10% larger than the default, twice as fast
    return fields


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


def _keep_key(row: dict[str, str]) -> tuple[int, str]:
    """Which member of a duplicate group is kept: a training-folder copy, then the first path."""
    split = row["source_split"].lower()
    return (0 if split in _TRAIN_FOLDERS else 1 if not split else 2, row["source_path"])


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents or out_r in src_r.parents:
        raise BrainMRIError(f"output {out} must lie outside the source folder {src} (the source is never modified)")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise BrainMRIError(f"output {out} already exists; pass --overwrite to replace it")
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists()):
            raise BrainMRIError(f"output {out} exists and is not a prepared folder; refusing to replace it")


def check_prepare_settings(size: int, phash_threshold: int) -> None:
    """The size and threshold that prepare (and the audit, which hashes as prepare does) accept."""
    if size < 8:
        raise BrainMRIError(f"--size must be at least 8 pixels, got {size}")
    if not -1 <= phash_threshold <= 64:
        raise BrainMRIError(
            f"--phash-threshold must be -1 (exact duplicates only) to 64 (bits of a phash), got {phash_threshold}"
        )


def prepare(
    src: str | Path,
    out: str | Path,
    size: int = DEFAULT_SIZE,
    phash_threshold: int = PHASH_THRESHOLD,
    label_map: str | Mapping[str, str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    groups: str | Path | None = None,
    groups_missing: str = "error",
) -> dict:
    """Prepare a dataset as the paper did (grayscale, ``size x size``) and remove duplicates.

    Writes ``OUT/<label>/*.png``, ``OUT/manifest.csv`` (one row per source file) and, last,
    ``OUT/prepare.json``; everything is built in a hidden sibling folder and renamed into
    place, so an interrupted run never leaves a folder that looks complete. Returns the
    contents of ``prepare.json`` (settings and counts).

    ``groups`` (a ``file,group`` CSV, e.g. patient IDs) is recorded in the manifest's
    ``patient`` column, so that every later split of OUT keeps each group on one side.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    check_prepare_settings(size, phash_threshold)
    mapping = parse_label_map(label_map)
    rows = scan(src, mapping)
    patients = (
        assign([r["source_path"] for r in rows], read_groups(groups), groups_missing, groups, str(src))
        if groups
        else None
    )
    _check_output(src, out, overwrite)
    tmp = staging_dir(out)
    try:
        names = _output_names(rows)
        for label in {r["label"] for r in rows}:
            (tmp / label).mkdir()
        tasks = [
            (str(src / r["source_path"]), str(tmp / n), size, max_pixels) for r, n in zip(rows, names, strict=True)
        ]
        results = map_images(_prepare_one, tasks, workers, "prepare", progress)
        manifest = _deduplicate(rows, names, results, phash_threshold)
        columns = MANIFEST_COLUMNS
        if patients is not None:
            columns += (PATIENT_COLUMN,)
            for m in manifest:
                m[PATIENT_COLUMN] = patients[m["source_path"]]
        for m in manifest:
            if m["status"] != "kept" and not m["status"].startswith("unreadable"):
                (tmp / m["_name"]).unlink()
        summary = _summarise(manifest, rows)
        _check_kept(src, manifest, summary)
        summary["settings"] = {
            "source": str(src.resolve()),
            "size": size,
            "phash_threshold": phash_threshold,
            "label_map": mapping,
            "max_pixels": max_pixels,
        }
        if patients is not None:
            summary["settings"].update(groups=str(Path(groups).resolve()), groups_missing=groups_missing)
            summary["patient_groups"] = len({p for p in patients.values() if p})
        summary["seconds"] = round(time.perf_counter() - started, 2)
        _write_records(tmp, manifest, columns, summary)
        os.chmod(tmp, 0o777 & ~current_umask())
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            out.rename(trash / "old")
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _check_kept(src: Path, manifest: Sequence[dict[str, str]], summary: dict) -> None:
    """A folder with no image left would only fail later, far from the cause."""
    if summary["kept"] == 0:
        bad = next((m for m in manifest if m["status"].startswith("unreadable")), None)
        example = f", e.g. {bad['source_path']}: {bad['status']}" if bad else ""
        raise BrainMRIError(
            f"no image of {src} could be kept ("
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in summary["removed"].items() if n)
            + f"{example}); nothing was written"
        )


def _write_records(folder: Path, manifest: Sequence[dict[str, str]], columns: Sequence[str], summary: dict) -> None:
    """``manifest.csv`` and, last, ``prepare.json`` into the folder being built."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest)
    (folder / MANIFEST).write_text(buf.getvalue(), encoding="utf-8")
    (folder / PREPARE_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _deduplicate(
    rows: Sequence[dict[str, str]], names: Sequence[str], results: Sequence[dict[str, str]], threshold: int
) -> list[dict[str, str]]:
    """Manifest rows: group readable images, keep one per group, exclude label conflicts."""
    manifest = []
    for r, name, res in zip(rows, names, results, strict=True):
        m = {k: "" for k in MANIFEST_COLUMNS}
        m.update(source_path=r["source_path"], label=r["label"], source_split=r["source_split"], _name=name)
        m.update(res)
        manifest.append(m)
    ok = [m for m in manifest if not m["status"]]
    roots = duplicate_groups([m["pixel_hash"] for m in ok], [m["phash"] for m in ok], threshold)
    members: dict[int, list[dict[str, str]]] = {}
    for m, root in zip(ok, roots, strict=True):
        members.setdefault(root, []).append(m)
    for group in members.values():
        group.sort(key=_keep_key)
        first = group[0]
        gid = first["pixel_hash"][:16]
        conflict = len({m["label"] for m in group}) > 1
        for m in group:
            m["group"] = gid
            if conflict:
                m["status"] = "label_conflict"
            elif m is first:
                m["status"], m["output_path"] = "kept", m["_name"]
            else:
                m["status"], m["duplicate_of"] = "duplicate", first["source_path"]
                m["_exact"] = "1" if m["pixel_hash"] == first["pixel_hash"] else ""
    return manifest


def _summarise(manifest: Sequence[dict[str, str]], rows: Sequence[dict[str, str]]) -> dict:
    before = Counter(m["label"] for m in manifest)
    after = Counter(m["label"] for m in manifest if m["status"] == "kept")
    removed = {
        "exact_duplicate": sum(1 for m in manifest if m["status"] == "duplicate" and m.get("_exact")),
        "near_duplicate": sum(1 for m in manifest if m["status"] == "duplicate" and not m.get("_exact")),
        "label_conflict": sum(1 for m in manifest if m["status"] == "label_conflict"),
        "unreadable": sum(1 for m in manifest if m["status"].startswith("unreadable")),
    }
    groups: dict[str, list[dict[str, str]]] = {}
    for m in manifest:
        if m["group"]:
            groups.setdefault(m["group"], []).append(m)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    sizes = Counter(len(g) for g in dup_groups)
    return {
        "files": len(manifest),
        "kept": sum(after.values()),
        "before": {c: before.get(c, 0) for c in CLASSES},
        "after": {c: after.get(c, 0) for c in CLASSES},
        "removed": removed,
        "duplicate_groups": len(dup_groups),
        "duplicate_group_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "groups_across_source_splits": sum(1 for g in dup_groups if len({m["source_split"] for m in g}) > 1),
        "label_conflict_groups": sum(1 for g in dup_groups if len({m["label"] for m in g}) > 1),
    }


def format_summary(summary: dict) -> str:
    """The per-class table and removal counts that ``brainmri data prepare`` prints."""
    lines = [f"{'class':<18}{'before':>8}{'after':>8}"]
    for c in CLASSES:
        lines.append(f"{c:<18}{summary['before'][c]:>8}{summary['after'][c]:>8}")
    lines.append(f"{'total':<18}{summary['files']:>8}{summary['kept']:>8}")
    removed = summary["removed"]
    lines.append(
        "removed: "
        + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in removed.items())
        + f" ({summary['duplicate_groups']} duplicate groups, largest "
        + f"{max(map(int, summary['duplicate_group_sizes']), default=1)}; "
        + f"{summary['groups_across_source_splits']} span source splits; "
        + f"{summary['label_conflict_groups']} with conflicting labels)"
    )
    return "\n".join(lines)


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
    groups (:func:`brainmri.groups.split_units`)."""
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


def _group_labels(rows: Sequence[dict[str, str]]) -> dict[str, tuple[str, int]]:
    """group -> (label of its first row, number of rows), groups in sorted order."""
    out: dict[str, tuple[str, int]] = {}
    for r in rows:
        label, n = out.get(r["group"], (r["label"], 0))
        out[r["group"]] = (label, n + 1)
    return dict(sorted(out.items()))


def _pick_groups(rows: Sequence[dict[str, str]], fraction: float, seed: int) -> set[str]:
    """Groups drawn per label until they hold ``round(fraction * n)`` of that label's rows.

    Groups are shuffled per label with NumPy's PCG64 generator (identical on every platform),
    so a split depends only on the rows, the fraction and the seed.
    """
    groups = _group_labels(rows)
    rng = np.random.default_rng(seed)
    picked: set[str] = set()
    for label in CLASSES:
        names = [g for g, (lab, _) in groups.items() if lab == label]
        if not names:
            continue
        target = round(fraction * sum(groups[g][1] for g in names))
        taken = 0
        for i in rng.permutation(len(names)):
            if taken >= target:
                break
            picked.add(names[i])
            taken += groups[names[i]][1]
    return picked


def make_split(
    prepared: str | Path,
    test_size: float = 0.2,
    seed: int = 42,
    groups: str | Path | None = None,
    groups_missing: str = "error",
) -> list[dict[str, str]]:
    """A stratified train/test split of the kept images in which no duplicate group, and no
    patient group where they are known (see :func:`kept_rows`), spans both sides."""
    if not 0.0 < test_size < 1.0:
        raise BrainMRIError(f"--test-size must be between 0 and 1, got {test_size}")
    rows = kept_rows(prepared, groups, groups_missing)
    test_groups = _pick_groups(rows, test_size, seed)
    if not test_groups or len(test_groups) == len(_group_labels(rows)):
        raise BrainMRIError(f"too few images ({len(rows)}) for a {1 - test_size:.0%}/{test_size:.0%} split")
    return [
        {
            "path": r["output_path"],
            "label": r["label"],
            "group": r["group"],
            "side": "test" if r["group"] in test_groups else "train",
        }
        for r in rows
    ]


def carve_validation(rows: Sequence[dict[str, str]], val_size: float, seed: int = 42) -> list[dict[str, str]]:
    """Move ``val_size`` of the training side, by whole duplicate groups and per label, to a
    ``val`` side.

    The validation side is what training may look at to choose an epoch; the test side stays
    untouched until evaluation, so its metrics are not biased by that choice. Rows already on
    a ``val`` side are returned to training first, so the result depends only on the
    train/test split, ``val_size`` and ``seed``.
    """
    if not 0.0 < val_size < 1.0:
        raise BrainMRIError(f"--val-size must be between 0 and 1, got {val_size}")
    rows = [{**r, "side": "train"} if r["side"] == "val" else dict(r) for r in rows]
    train = [r for r in rows if r["side"] == "train"]
    val_groups = _pick_groups(train, val_size, seed + 1)
    if not val_groups or len(val_groups) == len(_group_labels(train)):
        raise BrainMRIError(f"too few training images ({len(train)}) to hold out {val_size:.0%} for validation")
    for r in rows:
        if r["side"] == "train" and r["group"] in val_groups:
            r["side"] = "val"
    return rows


def make_kfold(
    prepared: str | Path, k: int = 5, seed: int = 42, groups: str | Path | None = None, groups_missing: str = "error"
) -> list[dict[str, str]]:
    """Stratified group k-fold assignment (``fold`` 0..k-1) for cross-validation; groups as in
    :func:`make_split`."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise BrainMRIError(f"--k must be at least 2, got {k}")
    rows = kept_rows(prepared, groups, groups_missing)
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
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = tuple(reader.fieldnames or ())
            if fields not in (SPLIT_COLUMNS, KFOLD_COLUMNS):
                raise BrainMRIError(
                    f"{path} is not a split file: columns {','.join(fields) or '(none)'}, expected "
                    f"{','.join(SPLIT_COLUMNS)} or {','.join(KFOLD_COLUMNS)}"
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:  # a damaged or foreign file, not a split
        reason = f"{path} is not a readable split file ({exc})"
        raise BrainMRIError(f"{reason}; make a new one with 'brainmri data split'") from None
    if not rows:
        raise BrainMRIError(f"split file {path} has no rows")
    return rows


def select_split(rows: Sequence[dict[str, str]], side: str, fold: int | None = None) -> list[dict[str, str]]:
    """The rows of one side; for k-fold files ``fold`` is the test fold and the rest is train.

    Single splits may also have a ``val`` side (carved from training by
    :func:`carve_validation`)."""
    if side not in ("train", "val", "test"):
        raise BrainMRIError(f"side must be 'train', 'val' or 'test', got {side!r}")
    if "fold" in rows[0]:
        if fold is None:
            raise BrainMRIError("this is a k-fold split file: choose a fold")
        folds = sorted({int(r["fold"]) for r in rows})
        if fold not in folds:
            raise BrainMRIError(f"fold {fold} not in split file (folds {folds[0]}..{folds[-1]})")
        if side == "val":
            raise BrainMRIError("a k-fold split file has no val side")
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


def split(
    prepared: str | Path,
    out: str | Path | None = None,
    test_size: float = 0.2,
    seed: int = 42,
    k: int | None = None,
    groups: str | Path | None = None,
    groups_missing: str = "error",
    overwrite: bool = False,
) -> Path:
    """Make and write a split file: train/test (default) or ``k`` folds; returns its path.

    An existing file is replaced only with ``overwrite``, and the prepared folder's own
    records (``manifest.csv``, ``prepare.json``) never: the split is drawn from them."""
    default = f"folds_k{k}.csv" if k is not None else "split.csv"
    path = Path(out) if out is not None else Path(prepared) / default
    _check_split_target(prepared, path, overwrite)
    if k is not None:
        rows = make_kfold(prepared, k=k, seed=seed, groups=groups, groups_missing=groups_missing)
    else:
        rows = make_split(prepared, test_size=test_size, seed=seed, groups=groups, groups_missing=groups_missing)
    return write_split(rows, path)


def _check_split_target(prepared: str | Path, path: Path, overwrite: bool) -> None:
    for name in (MANIFEST, PREPARE_JSON):
        record = Path(prepared) / name
        same = record.exists() and path.exists() and os.path.samefile(record, path)
        if same or path.resolve() == record.resolve():
            raise BrainMRIError(f"refusing to write the split over {record}, a record of the prepared folder")
    check_output(path, overwrite)


def fetch(*args, **kwargs) -> Path:
    """Download the public dataset; see :func:`brainmri.fetch.fetch`."""
    from brainmri.fetch import fetch as _fetch

    return _fetch(*args, **kwargs)
