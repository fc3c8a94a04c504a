"""Audit dataset folders for duplicates, label conflicts and train/test leakage, before training.

Public MRI sets are often re-shuffled copies of one another, and their own Testing/ folders
often hold copies of Training/ images, so a model is partly scored on what it trained on.
The audit hashes every image of one or more dataset folders exactly as ``data prepare`` does
(:func:`brainmri.data.hashing.decode_for_hashing`, the same size and phash threshold), groups exact
and near duplicates with :func:`brainmri.data.hashing.duplicate_groups`, and says where the groups
cross split folders, datasets and labels. It only reads the sources.
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data import hashing
from brainmri.data import prepare as preparation
from brainmri.data import scan as dataset
from brainmri.errors import BrainMRIError
from brainmri.io.images import MAX_PIXELS
from brainmri.io.preprocess import DEFAULT_SIZE
from brainmri.labels import CLASSES, parse_label_map

#: Split folders whose images are held out (a test or validation side).
TEST_FOLDERS = dataset.SPLIT_FOLDERS - dataset.TRAIN_FOLDERS
#: How many example pairs of duplicates across folders the audit keeps for its figure.
EXAMPLE_PAIRS = 6


def folder_role(split: str) -> str:
    """``training``, ``test`` (test or validation folders) or ``unsplit`` (class folders at the top)."""
    if not split:
        return "unsplit"
    return "training" if split.lower() in dataset.TRAIN_FOLDERS else "test"


def _dataset_names(sources: Sequence[Path]) -> list[str]:
    """Each source's folder name, made unique with ``-2``, ``-3``... where two share one."""
    names: list[str] = []
    for src in sources:
        base = src.resolve().name or "dataset"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def scan_sources(
    sources: Sequence[str | Path], label_map: str | Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every image file of every source, as records with its dataset, folder and label.

    Each source is scanned as prepare scans it (:func:`brainmri.data.scan.scan`); a missing or empty
    folder, or one given twice or inside another, is an error before anything is hashed."""
    if not sources:
        raise BrainMRIError("no source folders given")
    paths = [Path(s) for s in sources]
    mapping = parse_label_map(label_map)
    scanned = [dataset.scan(p, mapping) for p in paths]  # raises for missing, non-folder and empty sources
    resolved = [p.resolve() for p in paths]
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i < j and (a == b or a in b.parents or b in a.parents):
                raise BrainMRIError(f"source folders {paths[i]} and {paths[j]} overlap; give each dataset once")
    records = []
    for path, name, rows in zip(paths, _dataset_names(paths), scanned, strict=True):
        for r in rows:
            split = r["source_split"]
            records.append(
                {
                    "dataset": name,
                    "root": str(path),
                    "folder": f"{name}/{split}" if split else name,
                    "role": folder_role(split),
                    "path": r["source_path"],
                    "label": r["label"],
                }
            )
    return records


def hash_records(
    records: list[dict[str, Any]],
    size: int = DEFAULT_SIZE,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> None:
    """Add ``pixel_hash``, ``phash`` and ``status`` (``""`` or ``unreadable: <reason>``) to each
    record, on a process pool with a progress bar (:func:`brainmri.data.hashing.map_images`)."""
    tasks = [(str(Path(r["root"]) / r["path"]), size, max_pixels) for r in records]
    for r, res in zip(records, hashing.map_images(hashing.hash_one, tasks, workers, "audit", progress), strict=True):
        r["status"] = res["status"]
        r["pixel_hash"], r["phash"] = res.get("pixel_hash", ""), res.get("phash", "")


def _distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    return int(np.bitwise_count(np.uint64(int(a["phash"], 16)) ^ np.uint64(int(b["phash"], 16))))


def _member(r: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": r["dataset"],
        "folder": r["folder"],
        "path": r["path"],
        "label": r["label"],
        "phash": r["phash"],
        "exact": r["pixel_hash"] == first["pixel_hash"],
        "phash_distance": _distance(r, first),
    }


def _groups(readable: list[dict[str, Any]], threshold: int, order: dict[str, int]) -> list[list[dict[str, Any]]]:
    """Duplicate groups of two or more, members in prepare's keep order (training copy first)."""
    roots = hashing.duplicate_groups([r["pixel_hash"] for r in readable], [r["phash"] for r in readable], threshold)
    members: dict[int, list[dict[str, Any]]] = {}
    for r, root in zip(readable, roots, strict=True):
        members.setdefault(root, []).append(r)
    role_rank = {"training": 0, "unsplit": 1, "test": 2}
    groups = [
        sorted(g, key=lambda r: (role_rank[r["role"]], order[r["dataset"]], r["path"]))
        for g in members.values()
        if len(g) > 1
    ]
    return sorted(groups, key=lambda g: g[0]["pixel_hash"])


def _group_record(g: list[dict[str, Any]]) -> dict[str, Any]:
    first = g[0]
    folders = {(r["dataset"], r["folder"]) for r in g}
    return {
        "id": first["pixel_hash"][:16],  # as prepare names the group
        "size": len(g),
        "exact": len({r["pixel_hash"] for r in g}) == 1,
        "labels": sorted({r["label"] for r in g}),
        "folders": sorted(f for _, f in folders),
        "datasets": sorted({r["dataset"] for r in g}),
        "crosses_folders": any(n > 1 for n in Counter(d for d, _ in folders).values()),
        "members": [_member(r, first) for r in g],
    }


def _folder_stats(records: list[dict[str, Any]], groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Counts per folder: images, classes, duplicates within it, images in groups that leave it."""
    folders: dict[str, dict[str, Any]] = {}
    for r in records:
        f = folders.setdefault(
            r["folder"],
            {"dataset": r["dataset"], "folder": r["folder"], "role": r["role"], "files": 0, "unreadable": 0},
        )
        f["files"] += 1
        f["unreadable"] += bool(r["status"])
        f.setdefault("per_class", Counter())[r["label"]] += not r["status"]
    for f in folders.values():
        f["readable"] = f["files"] - f["unreadable"]
        f["per_class"] = {c: f["per_class"].get(c, 0) for c in CLASSES}
        f.update(duplicate_groups=0, duplicate_images=0, exact_copies=0, near_copies=0, shared_with_other_folders=0)
    for g in groups:
        by_folder: dict[str, list[dict[str, Any]]] = {}
        for r in g:
            by_folder.setdefault(r["folder"], []).append(r)
        for name, rs in by_folder.items():
            f = folders[name]
            if len(rs) > 1:  # copies within this folder: all but one per group; exact = same pixels
                f["duplicate_groups"] += 1
                f["duplicate_images"] += len(rs) - 1
                f["exact_copies"] += len(rs) - len({r["pixel_hash"] for r in rs})
            if len(by_folder) > 1:
                f["shared_with_other_folders"] += len(rs)
    for f in folders.values():
        f["near_copies"] = f["duplicate_images"] - f["exact_copies"]
    return sorted(folders.values(), key=lambda f: f["folder"])


def _leakage(records: list[dict[str, Any]], groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """For each test-like folder: how many of its images have a copy in a training-like folder
    (of any audited dataset), overall and per class, and in which training folders."""
    copies: dict[tuple[str, str], set[str]] = {}  # a test image -> the training folders holding a copy
    for g in groups:
        training = {r["folder"] for r in g if r["role"] == "training"}
        for r in g:
            if training and r["role"] == "test":
                copies[(r["folder"], r["path"])] = training
    folders: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["role"] != "test" or r["status"]:
            continue
        f = folders.setdefault(r["folder"], {"dataset": r["dataset"], "folder": r["folder"], "per_class": {}})
        where = copies.get((r["folder"], r["path"]), set())
        for counts in (f, f["per_class"].setdefault(r["label"], {})):
            counts["images"] = counts.get("images", 0) + 1
            counts["leaked"] = counts.get("leaked", 0) + bool(where)
        f.setdefault("copies_in", {})
        for t in sorted(where):
            f["copies_in"][t] = f["copies_in"].get(t, 0) + 1
    overall: dict[str, Any] = {"images": 0, "leaked": 0, "per_class": {}}
    for f in folders.values():
        for c, counts in f["per_class"].items():
            total = overall["per_class"].setdefault(c, {"images": 0, "leaked": 0})
            total["images"] += counts["images"]
            total["leaked"] += counts["leaked"]
        overall["images"] += f["images"]
        overall["leaked"] += f["leaked"]
    for counts in (overall, *folders.values()):
        counts["fraction"] = _fraction(counts)
        counts["per_class"] = {
            c: {**counts["per_class"][c], "fraction": _fraction(counts["per_class"][c])}
            for c in CLASSES
            if c in counts["per_class"]
        }
    return {**overall, "folders": sorted(folders.values(), key=lambda f: f["folder"])}


def _fraction(counts: Mapping[str, int]) -> float | None:
    return round(counts["leaked"] / counts["images"], 4) if counts["images"] else None


def _examples(groups: list[dict[str, Any]], n: int = EXAMPLE_PAIRS) -> list[dict[str, Any]]:
    """A few pairs of duplicates in different folders, for the figure: label conflicts first,
    then near and exact copies in turn (each group once, in id order)."""
    pairs: dict[str, list[dict[str, Any]]] = {"conflict": [], "near": [], "exact": []}
    for g in groups:
        if len(g["folders"]) < 2:
            continue
        a = g["members"][0]
        b = next(m for m in g["members"] if m["folder"] != a["folder"])
        pair = {"group": g["id"], "a": a, "b": b, "exact": b["exact"], "phash_distance": b["phash_distance"]}
        kind = "conflict" if a["label"] != b["label"] else "exact" if b["exact"] else "near"
        pairs[kind].append(pair)
    out = pairs["conflict"][: max(1, n // 3)]
    near, exact = iter(pairs["near"]), iter(pairs["exact"])
    while len(out) < n:
        added = [p for p in (next(near, None), next(exact, None)) if p is not None]
        if not added:
            break
        out += added
    return out[:n]


def run_audit(
    sources: Sequence[str | Path],
    size: int = DEFAULT_SIZE,
    phash_threshold: int = preparation.PHASH_THRESHOLD,
    label_map: str | Mapping[str, str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Audit ``sources`` (dataset folders) and return what ``audit.json`` holds; writes nothing.

    ``records`` are those of :func:`scan_sources` when the caller has scanned already."""
    from brainmri import __version__

    started = time.perf_counter()
    preparation.check_prepare_settings(size, phash_threshold)
    if records is None:
        records = scan_sources(sources, label_map)
    hash_records(records, size, max_pixels, workers, progress)
    names = list(dict.fromkeys(r["dataset"] for r in records))
    readable = [r for r in records if not r["status"]]
    raw_groups = _groups(readable, phash_threshold, {name: i for i, name in enumerate(names)})
    groups = [_group_record(g) for g in raw_groups]
    datasets = []
    for name in names:
        rs = [r for r in records if r["dataset"] == name]
        datasets.append(
            {
                "name": name,
                "path": str(Path(rs[0]["root"]).resolve()),
                "files": len(rs),
                "readable": sum(not r["status"] for r in rs),
                "unreadable": sum(bool(r["status"]) for r in rs),
                "folders": sorted({r["folder"] for r in rs}),
            }
        )
    result = {
        "settings": {
            "sources": [d["path"] for d in datasets],
            "size": size,
            "phash_threshold": phash_threshold,
            "label_map": parse_label_map(label_map),
            "max_pixels": max_pixels,
        },
        "datasets": datasets,
        "folders": _folder_stats(records, raw_groups),
        "images": {
            "files": len(records),
            "readable": len(readable),
            "unreadable": len(records) - len(readable),
            "in_duplicate_groups": sum(g["size"] for g in groups),
            "redundant_copies": sum(g["size"] - 1 for g in groups),
            "per_class": {c: sum(r["label"] == c for r in readable) for c in CLASSES},
        },
        "duplicate_groups": groups,
        "cross_folder_groups": [g["id"] for g in groups if g["crosses_folders"]],
        "cross_dataset_groups": [g["id"] for g in groups if len(g["datasets"]) > 1],
        "label_conflicts": [g["id"] for g in groups if len(g["labels"]) > 1],
        "test_images_leaked": _leakage(records, raw_groups),
        "unreadable": [
            {"dataset": r["dataset"], "path": r["path"], "reason": r["status"].removeprefix("unreadable: ")}
            for r in records
            if r["status"]
        ],
        "examples": _examples(groups),
    }
    result["environment"] = {"brainmri": __version__, "machine": platform.platform(), "cpus": _cpus()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
