"""A labelled folder of source images read for evaluation: each slice decoded, checked and
resized as the model sees it, and hashed for the training-overlap check.

Every model of a comparison is evaluated on the same external folder, in turn, at the same size:
the folder is read once (about 2 s for the external folder's 850 slices on 2 cores) and the
reads of the last :data:`REMEMBERED` folders are kept, each under the folder's path, the
settings and every file's size and modification time, so that a changed file is read again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data.scan import scan
from brainmri.inference.input_check import source_reasons
from brainmri.io.images import ImageError, read_image
from brainmri.io.preprocess import to_array

#: Folder reads kept (at 256 px the external folder's slices are about 55 MB).
REMEMBERED = 2


@dataclass(frozen=True)
class FolderRead:
    """What :func:`read_labelled_folder` found: per readable image of a known class its array
    (``size x size``), class index, path (relative to the folder), the input check's reasons
    about the source image and, when asked, its hashes at the prepared size; and the files
    skipped, with why."""

    arrays: tuple[np.ndarray, ...]
    labels: tuple[int, ...]
    paths: tuple[str, ...]
    reasons: tuple[tuple[str, ...], ...]
    hashes: tuple[tuple[str, str], ...]
    skipped: tuple[Mapping[str, str], ...]


def read_labelled_folder(
    folder: Path,
    label_map: str | Mapping[str, str] | None,
    classes: list[str],
    size: int,
    via: int | None,
    prep_size: int | None,
) -> FolderRead:
    """Read ``folder`` (``FOLDER/<class>/...``, class names mapped by ``label_map``) for a model
    of ``classes`` at ``size`` px, resized through ``via`` (the card's prepared size); hashes at
    ``prep_size`` when it is given (None: no overlap check). Unreadable files and unknown
    classes are reported in ``skipped``, never dropped silently."""
    files = tuple((r["source_path"], r["label"], *_stamp(folder / r["source_path"])) for r in scan(folder, label_map))
    return _read(folder.resolve(), files, tuple(classes), size, via, prep_size)


@functools.lru_cache(maxsize=REMEMBERED)
def _read(
    folder: Path,
    files: tuple[tuple[Any, ...], ...],
    classes: tuple[str, ...],
    size: int,
    via: int | None,
    prep_size: int | None,
) -> FolderRead:
    """The reading itself, kept under everything it depends on: the folder, each file's path,
    label, size and modification time (``files``), and the settings."""
    from brainmri.data.hashing import image_hashes

    arrays, labels, paths, reasons, hashes, skipped = [], [], [], [], [], []
    for path, label, *_ in files:
        if label not in classes:
            skipped.append({"path": path, "reason": f"label {label} not known to the model"})
            continue
        try:
            decoded = read_image(folder / path)
        except ImageError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            continue
        gray = decoded.array
        arrays.append(to_array(gray, size, via=via))
        reasons.append(tuple(source_reasons(gray, decoded.chroma)))
        if prep_size is not None:
            hashes.append(image_hashes(to_array(gray, prep_size)))
        labels.append(classes.index(label))
        paths.append(path)
    return FolderRead(tuple(arrays), tuple(labels), tuple(paths), tuple(reasons), tuple(hashes), tuple(skipped))


def _stamp(path: Path) -> tuple[Any, ...]:
    """A file's size and modification time (None, None for a file gone since the scan: it is
    then reported as unreadable when read)."""
    try:
        stat = path.stat()
    except OSError:
        return (None, None)
    return (stat.st_size, stat.st_mtime_ns)
