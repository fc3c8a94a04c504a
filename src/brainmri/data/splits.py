"""The split a training run uses, resolved from its settings into one train/val/test table.

Two policies draw a new split. ``group`` (the default) keeps every duplicate group of the
prepared folder on one side, and every patient group where they are known (``--groups``, or
recorded by prepare), together with the duplicate groups that join patients. ``random`` is
the paper's way, kept to measure what it costs: a stratified random split of every readable
source file, duplicates and label conflicts included, so copies of one image can sit on
both sides. The files that prepare set aside are read from the source folder recorded in
``prepare.json``, through the same preprocessing (``prepared_size`` then the training size).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainmri.config import TrainConfig
from brainmri.data import prepared as data
from brainmri.data import splitfile
from brainmri.data.groups import units_for
from brainmri.data.prepared import MANIFEST, PREPARE_JSON, Prepared, PreparedFolder, kept_rows
from brainmri.data.splitfile import write_split
from brainmri.errors import BrainMRIError
from brainmri.files import check_output
from brainmri.labels import CLASSES
from brainmri.rundir import SPLIT_CSV

#: What a split keeps on one side, as a run's card and report state it.
LEVELS = ("patient", "duplicate group", "image")

#: Manifest statuses of readable files, which a ``random`` split takes.
READABLE = ("kept", "duplicate", "label_conflict")


def all_readable_rows(prepared: Prepared) -> list[dict[str, str]]:
    """Every readable source file of a prepared folder, as split rows: the prepared PNG of a
    kept image, the source file (absolute path) of one that prepare set aside."""
    folder = PreparedFolder.open(prepared)
    source = folder.source
    rows = []
    for r in folder.manifest:
        if r["status"] not in READABLE:
            continue
        if r["status"] == "kept":
            path = r["output_path"]
        else:
            path = str(source / r["source_path"])
            if not Path(path).is_file():
                raise BrainMRIError(
                    f"--split-policy random reads the duplicates that prepare set aside from the source folder, "
                    f"but {path} is not there"
                )
        rows.append({"path": path, "label": r["label"], "group": r["group"] or path})
    return sorted(rows, key=lambda r: r["path"])


def make_random_split(prepared: Prepared, test_size: float = 0.2, seed: int = 42) -> list[dict[str, str]]:
    """The paper's split: stratified by label, image by image, over every readable file.

    The ``group`` column keeps each file's duplicate group, so that the leakage this split
    allows can be counted afterwards (:func:`crossing_groups`)."""
    if not 0.0 < test_size < 1.0:
        raise BrainMRIError(f"--test-size must be between 0 and 1, got {test_size}")
    rows = all_readable_rows(prepared)
    alone = [{**r, "group": r["path"]} for r in rows]
    test = pick_groups(alone, test_size, seed)
    return [{**r, "side": "test" if r["path"] in test else "train"} for r in rows]


def crossing_groups(rows: list[dict[str, str]]) -> int:
    """How many duplicate groups have members on more than one side."""
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(r["group"], set()).add(r["side"])
    return sum(len(s) > 1 for s in sides.values())


def units_by_path(
    prepared: Prepared, groups: str | Path | None = None, groups_missing: str = "error"
) -> dict[str, str] | None:
    """The split unit (:func:`brainmri.data.groups.split_units`) of every readable file, keyed as
    split files name it: the prepared PNG of a kept image, the absolute source path of any
    readable one (as a ``random`` split lists it). None when no patient groups are known."""
    folder = PreparedFolder.open(prepared)
    manifest = folder.manifest
    units = units_for(manifest, groups, groups_missing, str(folder.path))
    if units is None:
        return None
    source = folder.info.get("settings", {}).get("source")
    out = {str(Path(source) / path): unit for path, unit in units.items()} if source else {}
    out.update({m["output_path"]: units[m["source_path"]] for m in manifest if m["status"] == "kept"})
    return out


def apply_units(rows: list[dict[str, str]], units: dict[str, str], where: str) -> list[dict[str, str]]:
    """``rows`` of a given split file with each ``group`` replaced by its split unit, once it is
    checked that no unit (patient with its duplicates) has members on two sides."""
    out: list[dict[str, str]] = []
    sides: dict[str, set[str]] = {}
    for r in rows:
        unit = units.get(r["path"])
        if unit is None:
            raise BrainMRIError(f"{where} lists {r['path']}, which the prepared folder does not hold")
        sides.setdefault(unit, set()).add(r["side"])
        out.append({**r, "group": unit})
    crossing = sorted(u for u, s in sides.items() if len(s) > 1)
    if crossing:
        raise BrainMRIError(
            f"{where} puts {len(crossing)} groups on more than one side (e.g. {crossing[0]}), so it was not made "
            "with these groups; leave out --split to draw a new split that keeps them together"
        )
    return out


def split_level(config: TrainConfig, rows: list[dict[str, str]], prepared: Prepared | None = None) -> str:
    """What the run's split keeps on one side (one of :data:`LEVELS`): ``image`` for a random
    split, or a given split file whose duplicate groups cross sides; ``patient`` where patient
    groups were used; ``duplicate group`` otherwise. ``prepared``: the run's prepared folder, if
    the caller has it open (else ``config.data``)."""
    if (not config.split and config.split_policy == "random") or crossing_groups(rows):
        return "image"
    if config.groups or data.has_patient_groups(prepared if prepared is not None else config.data):
        return "patient"
    return "duplicate group"


def effective_split(config: TrainConfig, prepared: Prepared | None = None) -> list[dict[str, str]]:
    """The split rows a run uses, as a single split: a k-fold file resolved to its fold, a
    validation side carved from the training side when ``val_size`` > 0, the per-class limit
    applied. A given split file is checked against the patient groups, if any are known.
    ``prepared``: ``config.data`` if the caller has it open."""
    folder = prepared if prepared is not None else config.data
    if config.split:
        rows = splitfile.read_split(config.split)
        if "fold" in rows[0]:
            if config.fold is None:
                raise BrainMRIError(f"{config.split} is a k-fold split; choose the held-out fold with --fold K")
            rows = [
                {**r, "side": side}
                for side in ("train", "test")
                for r in splitfile.select_split(rows, side, config.fold)
            ]
        units = units_by_path(folder, config.groups, config.groups_missing)
        if units is not None:
            rows = apply_units(rows, units, config.split)
    elif config.split_policy == "random":  # (a config with --fold has a --split: brainmri.config checks it)
        rows = make_random_split(folder, config.test_size, config.seed)
    else:
        rows = make_split(folder, config.test_size, config.seed, config.groups, config.groups_missing)
    if config.val_size > 0:
        rows = carve_validation(rows, config.val_size, config.seed)
    else:
        rows = [{**r, "side": "train"} if r["side"] == "val" else r for r in rows]
    if config.limit_per_class:
        # A seeded random subset: the first N by name would be biased (prepared files are named
        # after their source folder, so e.g. the dataset's own Testing/ images come first).
        taken: dict[tuple[str, str], int] = {}
        keep = set()
        for i in np.random.default_rng(config.seed).permutation(len(rows)):
            key = (rows[i]["side"], rows[i]["label"])
            if taken.get(key, 0) < config.limit_per_class:
                taken[key] = taken.get(key, 0) + 1
                keep.add(int(i))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return [{k: r[k] for k in ("path", "label", "group", "side")} for r in rows]


def side_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Images per label on each side."""
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        side = counts.setdefault(r["side"], {})
        side[r["label"]] = side.get(r["label"], 0) + 1
    return counts


# --- drawing a split ---------------------------------------------------------------------


def _group_labels(rows: Sequence[dict[str, str]]) -> dict[str, tuple[str, int]]:
    """group -> (label of its first row, number of rows), groups in sorted order."""
    out: dict[str, tuple[str, int]] = {}
    for r in rows:
        label, n = out.get(r["group"], (r["label"], 0))
        out[r["group"]] = (label, n + 1)
    return dict(sorted(out.items()))


def pick_groups(rows: Sequence[dict[str, str]], fraction: float, seed: int) -> set[str]:
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
    prepared: Prepared,
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
    test_groups = pick_groups(rows, test_size, seed)
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
    val_groups = pick_groups(train, val_size, seed + 1)
    if not val_groups or len(val_groups) == len(_group_labels(train)):
        raise BrainMRIError(f"too few training images ({len(train)}) to hold out {val_size:.0%} for validation")
    for r in rows:
        if r["side"] == "train" and r["group"] in val_groups:
            r["side"] = "val"
    return rows


def check_folds(rows: Sequence[dict[str, str]], k: int, flag: str = "--k") -> None:
    """Refuse ``k`` folds that the rows cannot fill: more folds than image groups (which stay
    whole), or than the smallest class has images, so that no class could be in every fold
    (scikit-learn's own message for that is a traceback). The message names the smallest class
    and its size."""
    if k < 2:
        raise BrainMRIError(f"{flag} must be at least 2, got {k}")
    n_groups = len({r["group"] for r in rows})
    if n_groups < k:
        raise BrainMRIError(
            f"cannot make {k} folds from {n_groups} image groups; use {flag} {max(n_groups, 2)} or fewer"
        )
    images: dict[str, int] = {}
    for r in rows:
        images[r["label"]] = images.get(r["label"], 0) + 1
    smallest = min(sorted(images), key=images.__getitem__)
    if images[smallest] < k:
        raise BrainMRIError(
            f"cannot make {k} folds: the smallest class, {smallest}, has {images[smallest]} images; "
            f"use {flag} {max(images[smallest], 2)} or fewer"
        )


def make_kfold(
    prepared: Prepared,
    k: int = 5,
    seed: int = 42,
    groups: str | Path | None = None,
    groups_missing: str = "error",
    flag: str = "--k",
) -> list[dict[str, str]]:
    """Stratified group k-fold assignment (``fold`` 0..k-1) for cross-validation; groups as in
    :func:`make_split`. ``flag`` names the setting in errors (``--k``, or compare's ``--cv``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise BrainMRIError(f"{flag} must be at least 2, got {k}")
    rows = kept_rows(prepared, groups, groups_missing)
    check_folds(rows, k, flag)
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    group_ids = np.array([r["group"] for r in rows])
    folds = np.empty(len(rows), dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test_idx) in enumerate(cv.split(np.zeros(len(rows)), y, group_ids)):
        folds[test_idx] = fold
    return [
        {"path": r["output_path"], "label": r["label"], "group": r["group"], "fold": str(int(f))}
        for r, f in zip(rows, folds, strict=True)
    ]


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
    default = f"folds_k{k}.csv" if k is not None else SPLIT_CSV
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
