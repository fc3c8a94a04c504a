"""A finished run as evaluation, the input check's calibration and the failure gallery read it:
:class:`Run` holds its folder, its ``config.json``, the card of its kept model and, read on first
use and then kept, its split rows and its prepared folder, so that each of a run's records is read
once instead of paths being rebuilt and files re-read function by function.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from brainmri.data.prepared import PREPARE_JSON, PreparedFolder
from brainmri.errors import BrainMRIError
from brainmri.rundir import RunDir


def read_json_file(path: Path) -> dict[str, Any]:
    """A run's JSON record, ``{}`` where the run has none; a damaged one is one line."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BrainMRIError(f"{path} is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class Run:
    """A run folder with what evaluation needs of it. ``config`` is ``config.json`` as the run
    wrote it (a mapping: an older run's lacks later settings, and evaluating it needs none);
    ``card`` the kept model's card, as the caller read it with the model; ``folder`` the prepared
    folder already opened by the caller (training), else opened on first use."""

    dir: RunDir
    config: Mapping[str, Any]
    card: Mapping[str, Any]
    folder: PreparedFolder | None = None

    @classmethod
    def read(cls, path: str | Path, card: Mapping[str, Any], folder: PreparedFolder | None = None) -> Run:
        run = RunDir(path)
        return cls(run, read_json_file(run.config), card, folder)

    def with_data(self, data: str | Path | None) -> Run:
        """The same run with its prepared folder at ``data`` (moved since training); unchanged
        for None."""
        if data is None:
            return self
        return replace(self, config={**self.config, "data": str(data)}, folder=None)

    @property
    def path(self) -> Path:
        return self.dir.path

    @functools.cached_property
    def split(self) -> list[dict[str, str]] | None:
        """The rows of ``split.csv`` (read once; a damaged file is one line), None without one."""
        from brainmri.data.splitfile import read_split

        return read_split(self.dir.split) if self.dir.split.is_file() else None

    @property
    def fold(self) -> int | None:
        """The run's fold when its split.csv is a k-fold file (older runs); None for a single
        split (training resolves k-fold files into one train/test split.csv)."""
        return self.config.get("fold") if self.split and "fold" in self.split[0] else None

    @property
    def data(self) -> Path | None:
        """The prepared folder the run trained on, if its config names one that is still there."""
        data = self.config.get("data")
        return Path(data) if data and Path(data).is_dir() else None

    @functools.cached_property
    def prepared(self) -> PreparedFolder:
        """The run's prepared folder, its records (``manifest.csv``, ``prepare.json``) read once."""
        if self.folder is not None:
            return self.folder
        if self.data is None:
            raise BrainMRIError(f"the prepared data of run {self.path} ({self.config.get('data')}) is not there")
        return PreparedFolder.open(self.data)

    def can_check_overlap(self) -> bool:
        """Whether an outside folder can be checked against the run's training data: its
        prepared folder is finished (has ``prepare.json``) and its split is there."""
        return self.data is not None and (self.data / PREPARE_JSON).is_file() and self.dir.split.is_file()
