"""The split file: one row per image (path, label, group, and side or fold), written
atomically and read back with its columns checked."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text

SPLIT_COLUMNS = ("path", "label", "group", "side")


KFOLD_COLUMNS = ("path", "label", "group", "fold")


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
