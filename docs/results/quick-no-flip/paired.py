"""Flip averaging against none, on the same trained weights: per model, the test side's and the
external folder's accuracy with and without it and the paired difference, with a bootstrap CI
clustered by duplicate group (the split's groups; the external folder's near-duplicate groups).

    python paired.py flip-1 no-flip-1   # two comparison folders (reproduce's OUT/quick)
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np

from brainmri.metrics.paired import paired_bootstrap
from brainmri.metrics.predictions import read_predictions

EXTERNAL = "brain-tumor-mri-external"


def correct(path: Path) -> tuple[list[str], np.ndarray]:
    y, proba, paths, _ = read_predictions(path)
    return paths, (proba.argmax(1) == y).astype(float)


def train_losses(run: Path) -> list[str]:
    with (run / "history.csv").open(newline="", encoding="utf-8") as fh:
        return [r["train_loss"] for r in csv.DictReader(fh)]


def groups(path: Path, key: str, value: str) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {r[key]: r[value] for r in csv.DictReader(fh)}


def main(with_flip: Path, without: Path) -> dict:
    out = {}
    for run in sorted(p.name for p in (with_flip / "runs").iterdir()):
        a_dir, b_dir = with_flip / "runs" / run, without / "runs" / run
        same_training = train_losses(a_dir) == train_losses(b_dir)  # the same weights: only evaluation differs
        sides = {
            "test": ("predictions.csv", groups(a_dir / "split.csv", "path", "group")),
            "external": (f"eval/{EXTERNAL}/predictions.csv",
                         groups(with_flip / f"external-groups-{EXTERNAL}.csv", "file", "group")),
        }  # fmt: skip
        out[run] = {"same_training_losses": same_training}
        for side, (name, group_of) in sides.items():
            paths_a, a = correct(a_dir / name)
            paths_b, b = correct(b_dir / name)
            assert paths_a == paths_b, "the two runs scored different images"
            diff = paired_bootstrap(a, b, clusters=[group_of.get(p, p) for p in paths_a])
            out[run][side] = {"with_flip": a.mean(), "without": b.mean(), "difference": diff}
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=2))
