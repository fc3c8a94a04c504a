"""The training loop really learns: a small network fits a small set of real slices.

Runs folder, resume and checkpoint tests pass even if gradients never reach the weights;
this one does not.
"""

from __future__ import annotations

import csv

from brainmri.config import TrainConfig
from brainmri.data import prepare
from brainmri.train import train


def test_a_small_model_fits_real_training_images(small_raw, tmp_path):
    prepare(small_raw, tmp_path / "prepared", size=32, workers=1, progress=False)
    config = TrainConfig(
        data=str(tmp_path / "prepared"),
        arch="resnet18",
        weights="none",
        epochs=6,
        batch_size=8,
        lr=1e-3,
        image_size=32,
        augment=False,
        balance="none",
        seed=0,
    )
    run = train(config, tmp_path / "run", progress=False)
    with open(run / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    last = history[-1]
    losses = [float(row["train_loss"]) for row in history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert float(last["train_acc"]) >= 0.8, history
