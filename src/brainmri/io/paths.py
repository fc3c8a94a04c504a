"""Which files a command reads: files, folders (searched recursively for image suffixes) and
glob patterns expanded into a list of image files, for predict, export calibration and the
input-check measurement."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from brainmri.errors import BrainMRIError
from brainmri.io.images import IMAGE_SUFFIXES


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files, folders (searched recursively for image suffixes) and glob patterns -> files.

    A named file is kept even if missing or unreadable, so that it gets an error row; a
    folder without images or a pattern without matches is a usage error.
    """
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise BrainMRIError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            out.extend(found)
        elif not path.exists() and glob.has_magic(text):
            matched = sorted(glob.glob(text, recursive=True))
            if not matched:
                raise BrainMRIError(f"no files match {text!r}")
            out.extend(expand_paths(matched))
        else:
            out.append(path)
    if not out:
        raise BrainMRIError("no input images given")
    return out
