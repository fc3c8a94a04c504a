"""Patient (or any other) groups from a ``file,group`` CSV, joined with duplicate groups.

Slices of one patient look alike, so a split that puts one patient's slices on both sides
leaks that patient into the test set as surely as a duplicate does. Where a dataset carries
patient identifiers, ``--groups FILE`` names them; the unit a split keeps on one side is then
the connected component of "same duplicate group" and "same patient": a duplicate that joins
two patients joins them for the split too.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from brainmri.config import GROUPS_MISSING
from brainmri.data.manifest import ManifestRow
from brainmri.errors import BrainMRIError

#: The manifest column in which prepare records each source file's group from ``--groups``.
PATIENT_COLUMN = "patient"
#: How many missing file names an error shows before it gives the count.
SHOW_MISSING = 3


def _norm(path: str) -> str:
    """A ``file`` cell as the manifest writes source paths: POSIX separators, no ``./``."""
    return PurePosixPath(path.strip().replace("\\", "/")).as_posix()


def read_groups(path: str | Path) -> dict[str, str]:
    """``file -> group`` from a CSV with (at least) the columns ``file`` and ``group``.

    ``file`` is the source file's path relative to the dataset folder, as prepare's manifest
    writes it in ``source_path``. A row without a group, or a file given two groups, is an
    error: either would silently decide the split."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or ()]
            if not {"file", "group"} <= set(fields):
                raise BrainMRIError(
                    f"groups file {path} needs the columns file,group (file relative to the dataset folder, "
                    f"group e.g. a patient ID); it has {','.join(fields) or 'no header'}"
                )
            reader.fieldnames = fields
            rows = list(reader)
    except FileNotFoundError:
        raise BrainMRIError(f"groups file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BrainMRIError(f"cannot read groups file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    groups: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        file, group = _norm(row["file"] or ""), (row["group"] or "").strip()
        if not file or file == "." or not group:
            raise BrainMRIError(f"groups file {path}, line {line}: every row needs a file and a group")
        if groups.setdefault(file, group) != group:
            raise BrainMRIError(f"groups file {path}: {file} is given two groups ({groups[file]!r} and {group!r})")
    if not groups:
        raise BrainMRIError(f"groups file {path} has no rows")
    return groups


def assign(
    files: Sequence[str], groups: Mapping[str, str], missing: str, path: str | Path, where: str
) -> dict[str, str]:
    """Each of ``files`` with its group; ``""`` (a group of its own) for a file the CSV lacks
    when ``missing`` is ``singleton``, an error naming the first few otherwise."""
    if missing not in GROUPS_MISSING:
        raise BrainMRIError(f"unknown --groups-missing {missing!r}; choose one of {', '.join(GROUPS_MISSING)}")
    absent = [f for f in files if f not in groups]
    if absent and missing == "error":
        more = len(absent) - SHOW_MISSING
        shown = ", ".join(absent[:SHOW_MISSING]) + (f" and {more} more" if more > 0 else "")
        raise BrainMRIError(
            f"{len(absent)} of the {len(files)} files of {where} are not in the groups file {path}: {shown}; add them, "
            "or pass --groups-missing singleton to give each its own group"
        )
    return {f: groups.get(f, "") for f in files}


def split_units(manifest: Sequence[ManifestRow], patients: Mapping[str, str]) -> dict[str, str]:
    """``source_path -> unit`` for every readable manifest row: the connected components of
    rows that share a duplicate group or a (non-empty) patient group.

    A unit with patients is named ``patient:<its smallest patient group>``; one without keeps
    its duplicate group's name, so splits without patients are unchanged."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = [m for m in manifest if m["group"]]
    n = len(rows)
    if n == 0:
        return {}
    first_dup: dict[str, int] = {}
    first_patient: dict[str, int] = {}
    src, dst = [], []
    for i, m in enumerate(rows):
        src.append(first_dup.setdefault(m["group"], i))
        dst.append(i)
        patient = patients.get(m["source_path"], "")
        if patient:
            src.append(first_patient.setdefault(patient, i))
            dst.append(i)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    patient_of: dict[int, str] = {}  # component -> its smallest patient group
    dup_of: dict[int, str] = {}  # component -> its duplicate group (the only one, if it has no patient)
    for i, m in enumerate(rows):
        label = int(labels[i])
        dup_of.setdefault(label, m["group"])
        patient = patients.get(m["source_path"], "")
        if patient and (label not in patient_of or patient < patient_of[label]):
            patient_of[label] = patient
    return {
        m["source_path"]: f"patient:{patient_of[int(c)]}" if int(c) in patient_of else dup_of[int(c)]
        for m, c in zip(rows, labels, strict=True)
    }


def units_for(
    manifest: Sequence[ManifestRow], groups: str | Path | None, missing: str, where: str
) -> dict[str, str] | None:
    """Split units of a prepared folder's manifest: from the ``groups`` CSV if given, else from
    the groups prepare recorded; None when neither exists (split by duplicate group only)."""
    if groups:
        files = [m["source_path"] for m in manifest]
        patients = assign(files, read_groups(groups), missing, groups, where)
    elif any(m.get("patient") for m in manifest):  # PATIENT_COLUMN, named so that the row's type is checked
        patients = {m["source_path"]: m.get("patient") or "" for m in manifest}
    else:
        return None
    return split_units(manifest, patients)
