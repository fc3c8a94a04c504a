"""What the input check's calibration costs a quick-preset comparison: ``fit_statistics_of`` for
each of its three models (cross-fitted feature scores, the stored transform, the image statistics
of the training side), each followed by the image statistics of the external folder (that model's
evaluation), in the order ``reproduce`` runs them. One JSON line: seconds, the thresholds, and the
commit of the brainmri that ran.

    PYTHONPATH=TREE/src python time_calibration.py INPUTS LABEL
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import brainmri
from brainmri.inference import input_check as ic
from brainmri.inference.image_stats import statistics

ARCHS = ("resnet50", "resnet101", "resnet152")


def main(inputs: Path, label: str) -> None:
    labels = np.load(inputs / "labels.npy")
    groups = json.loads((inputs / "groups.json").read_text())
    images = torch.from_numpy(np.load(inputs / "images.npy"))
    external = np.load(inputs / "external.npy")
    features = {arch: np.load(inputs / f"features-{arch}.npy") for arch in ARCHS}
    tree = Path(brainmri.__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "src"], capture_output=True, text=True)
    out: dict = {"label": label, "commit": commit.stdout.strip(), "clean": not dirty.stdout.strip()}
    calibration = external_statistics = 0.0
    for arch, feats in features.items():
        t = time.perf_counter()
        entry, _ = ic.fit_statistics_of(feats, images, labels, groups, {})
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        statistics(external)
        external_seconds = time.perf_counter() - t
        out[arch] = {
            "calibration_seconds": seconds,
            "external_statistics_seconds": external_seconds,
            "threshold": entry["threshold"],
            "image_threshold": entry["image_statistics"]["threshold"],
        }
        calibration += seconds
        external_statistics += external_seconds
    out.update(calibration_seconds=calibration, external_statistics_seconds=external_statistics)
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
