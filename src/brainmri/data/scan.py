"""A dataset folder as the project reads it: class folders, optionally under split folders
such as Training/ and Testing/, their names mapped onto the four classes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from brainmri.errors import BrainMRIError
from brainmri.io.images import IMAGE_SUFFIXES
from brainmri.labels import canonical_label, parse_label_map

#: Folder names that mark a dataset's own split level above the class folders.
SPLIT_FOLDERS = frozenset({"training", "train", "testing", "test", "validation", "val", "valid"})


#: Split folders whose images a model trains on; the rest of SPLIT_FOLDERS are held out.
TRAIN_FOLDERS = frozenset({"training", "train"})


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


def empty_class_folders(src: str | Path, rows: list[dict[str, str]]) -> list[str]:
    """Class folders of ``src`` (``SRC/<class>`` or ``SRC/<split>/<class>``) that hold no image
    file: a class meant to be there that is not, which must be said, not passed over."""
    src = Path(src)
    used = {(r["source_split"], r["class_folder"]) for r in rows}

    def folders(parent: Path) -> list[Path]:
        return sorted(p for p in parent.iterdir() if p.is_dir() and not _skip(p.name))

    empty = []
    for top in folders(src):
        if top.name.lower() in SPLIT_FOLDERS:
            empty += [f"{top.name}/{c.name}" for c in folders(top) if (top.name, c.name) not in used]
        elif ("", top.name) not in used:
            empty.append(top.name)
    return empty
