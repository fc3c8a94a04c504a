"""The inputs of time_calibration.py, from a finished quick-preset comparison: each model's
pooled features of its training side (as the end of training computes them), the labels, the
duplicate groups and the images of that side (the same for the three models), and the external
folder's slices at the models' size.

    python features.py RUNS PREPARED EXTERNAL OUT
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from brainmri.inference import input_check as ic
from brainmri.inference.forward import probabilities_with
from brainmri.inference.run_record import Run
from brainmri.io.images import read_gray
from brainmri.io.preprocess import resize
from brainmri.models.checkpoint import model_from_checkpoint, read_checkpoint
from brainmri.rundir import RunDir

ARCHS = ("resnet50", "resnet101", "resnet152")


def main(runs: Path, prepared: Path, external: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for arch in ARCHS:
        best = RunDir(runs / arch).best
        ckpt = read_checkpoint(best)
        run = Run.read(runs / arch, ckpt["card"]).with_data(prepared)
        images, labels, groups, _ = ic._training_side(run)
        model, _ = model_from_checkpoint(ckpt, best)
        _, features = probabilities_with(model, images, ic.pooled_features, batch_size=64, device=torch.device("cpu"))
        np.save(out / f"features-{arch}.npy", features)
    np.save(out / "labels.npy", labels)
    (out / "groups.json").write_text(json.dumps(groups))
    np.save(out / "images.npy", images.numpy())
    size = images.shape[-1]
    files = sorted(p for p in external.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    np.save(out / "external.npy", np.stack([resize(read_gray(f), size) for f in files])[:, None])


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:5]))
