"""Preparing a dataset as the paper did, and without its leakage: every slice decoded to 8-bit
grayscale at one size, hashed, grouped with its exact and near duplicates; one image per group
kept, label conflicts excluded, and a manifest row for every source file.

``prepare`` writes ``OUT/<label>/*.png``, ``OUT/manifest.csv`` and, last, ``OUT/prepare.json``,
built in a hidden folder beside OUT and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from brainmri.data.groups import PATIENT_COLUMN, assign, read_groups
from brainmri.data.hashing import decode_for_hashing, duplicate_groups, map_images
from brainmri.data.manifest import MANIFEST, MANIFEST_COLUMNS
from brainmri.data.prepared import PREPARE_JSON
from brainmri.data.scan import TRAIN_FOLDERS, empty_class_folders, scan
from brainmri.errors import BrainMRIError
from brainmri.files import publish_dir, shown, staging_dir, utf8_text
from brainmri.io.images import MAX_PIXELS
from brainmri.io.preprocess import DEFAULT_SIZE
from brainmri.labels import CLASSES, parse_label_map

#: Default Hamming distance (of 64-bit perceptual hashes) at or under which two slices count
#: as near duplicates; see docs/data.md for how it was chosen.
PHASH_THRESHOLD = 2


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


def _keep_key(row: dict[str, str]) -> tuple[int, str]:
    """Which member of a duplicate group is kept: a training-folder copy, then the first path."""
    split = row["source_split"].lower()
    return (0 if split in TRAIN_FOLDERS else 1 if not split else 2, row["source_path"])


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
    empty = empty_class_folders(src, rows)
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
        columns: tuple[str, ...] = MANIFEST_COLUMNS
        if patients is not None:
            columns += (PATIENT_COLUMN,)
            for m in manifest:
                m[PATIENT_COLUMN] = patients[m["source_path"]]
        for m, name in zip(manifest, names, strict=True):  # rows in the order of their staged files
            if m["status"] != "kept" and not m["status"].startswith("unreadable"):
                (tmp / name).unlink()
        summary = _summarise(manifest, rows)
        _check_kept(src, manifest, summary)
        summary["warnings"] = class_warnings(summary["after"], empty)
        summary["settings"] = {
            "source": str(src.resolve()),
            "size": size,
            "phash_threshold": phash_threshold,
            "label_map": mapping,
            "max_pixels": max_pixels,
        }
        if patients is not None and groups:  # patients come from groups
            summary["settings"].update(groups=str(Path(groups).resolve()), groups_missing=groups_missing)
            summary["patient_groups"] = len({p for p in patients.values() if p})
        summary["seconds"] = round(time.perf_counter() - started, 2)
        _write_records(tmp, manifest, columns, summary)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def class_warnings(kept: Mapping[str, int], empty_folders: Sequence[str]) -> list[str]:
    """What a user must hear about missing classes: class folders without images, and classes
    of which no image is kept (a model trained on the folder could never predict them)."""
    warnings = [f"class folder {shown(f)} holds no images" for f in empty_folders]
    missing = [c for c in CLASSES if not kept.get(c)]
    if missing:
        warnings.append(
            f"no images of {', '.join(missing)}: a model trained on this folder cannot learn "
            f"{'that class' if len(missing) == 1 else 'those classes'} (training refuses it)"
        )
    return warnings


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
    # Source file names that are not UTF-8 are recorded escaped (utf8_text), so the manifest
    # stays a UTF-8 file that every reader can open.
    writer.writerows({k: utf8_text(v) if isinstance(v, str) else v for k, v in m.items()} for m in manifest)
    (folder / MANIFEST).write_text(buf.getvalue(), encoding="utf-8")
    (folder / PREPARE_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _deduplicate(
    rows: Sequence[dict[str, str]], names: Sequence[str], results: Sequence[dict[str, str]], threshold: int
) -> list[dict[str, str]]:
    """Manifest rows, one per source file in the order of ``rows`` (whose staged output files
    are ``names``): group readable images, keep one per group, exclude label conflicts."""
    manifest = []
    for r, res in zip(rows, results, strict=True):
        m = {k: "" for k in MANIFEST_COLUMNS}
        m.update(source_path=r["source_path"], label=r["label"], source_split=r["source_split"])
        m.update(res)
        manifest.append(m)
    staged = {id(m): name for m, name in zip(manifest, names, strict=True)}
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
                m["status"], m["output_path"] = "kept", staged[id(m)]
            else:
                m["status"], m["duplicate_of"] = "duplicate", first["source_path"]
    return manifest


def _summarise(manifest: Sequence[dict[str, str]], rows: Sequence[dict[str, str]]) -> dict:
    before = Counter(m["label"] for m in manifest)
    after = Counter(m["label"] for m in manifest if m["status"] == "kept")
    pixel_hash = {m["source_path"]: m["pixel_hash"] for m in manifest}
    duplicates = [m for m in manifest if m["status"] == "duplicate"]
    exact = sum(1 for m in duplicates if m["pixel_hash"] == pixel_hash[m["duplicate_of"]])
    removed = {
        "exact_duplicate": exact,
        "near_duplicate": len(duplicates) - exact,
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
