"""The training loop really learns: a small network fits a small set of real slices.

Runs folder, resume and checkpoint tests pass even if gradients never reach the weights;
this one does not. Device, precision and seed are pinned and the model is scored in fp32 on
its own training images, so the gap between "learnt" (near 1.0) and chance (0.25) is far
wider than any CPU's rounding.
"""

from __future__ import annotations

import csv

from brainmri.config import TrainConfig
from brainmri.data.prepare import prepare
from brainmri.data.prepared import load_split
from brainmri.inference.forward import score
from brainmri.models.checkpoint import load_model
from brainmri.training.run import train


def test_a_small_model_fits_real_training_images(small_raw, tmp_path):
    prepare(small_raw, tmp_path / "prepared", size=32, workers=1, progress=False)
    config = TrainConfig(
        data=str(tmp_path / "prepared"),
        arch="resnet18",
        weights="none",
        epochs=10,
        batch_size=8,
        optimizer="adamw",
        lr=2e-3,
        schedule="onecycle",
        image_size=32,
        augment=False,
        balance="none",
        seed=0,
        deterministic=True,
        precision="fp32",
        device="cpu",
    )
    run = train(config, tmp_path / "run", progress=False)
    with open(run / "history.csv", newline="") as fh:
        losses = [float(row["train_loss"]) for row in csv.DictReader(fh)]
    assert losses[-1] < 0.5 * losses[0], losses
    model, _ = load_model(run / "checkpoints" / "best.pt")
    images, labels, _ = load_split(config.data, run / "split.csv", "train", size=32)
    fitted = score(model, images, labels)["accuracy"]
    assert fitted >= 0.75, f"training images fitted to {fitted:.3f} (chance is 0.25)"
