"""The record of a prepared folder's source files: ``manifest.csv``, one row per source file,
kept or not (:mod:`brainmri.data.prepare` writes it, :class:`brainmri.data.prepared.PreparedFolder`
reads it once), and :class:`ManifestRow`, the type of its rows wherever they are passed on.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

MANIFEST = "manifest.csv"
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


class ManifestRow(TypedDict):
    """One row of ``manifest.csv``: one source file, kept or not, as CSV text (empty where a
    value does not apply). Typed so that a misspelt column is a type error, not a KeyError."""

    source_path: str  # relative to the source folder prepare read
    label: str
    output_path: str  # the prepared PNG, relative to the prepared folder; empty unless kept
    width: str
    height: str
    mode: str
    pixel_hash: str
    phash: str
    group: str  # duplicate group (first 16 hex digits of the kept image's pixel hash)
    status: str  # kept, duplicate, label_conflict, unreadable: <reason>
    source_split: str
    duplicate_of: str
    patient: NotRequired[str]  # with prepare --groups
