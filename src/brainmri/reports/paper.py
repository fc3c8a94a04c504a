"""The reference paper (Kruszyk, Ledziński & Śmigiel, 2024): its published numbers and settings,
and what it takes to say where a run departs from them."""

from __future__ import annotations

from typing import Any

#: The paper's Table 2, only the numbers we can vouch for (accuracy and training time);
#: its precision, sensitivity and F1 are reported as "not given".
PUBLISHED: dict[str, dict[str, float]] = {
    "resnet50": {"accuracy": 0.95, "training_seconds": 316.7},
    "resnet101": {"accuracy": 0.95, "training_seconds": 496.6},
    "resnet152": {"accuracy": 0.93, "training_seconds": 872.7},
}


PAPER_CITATION = "Kruszyk et al., 2024"


#: The paper's training settings, for saying where a run departs from them.
PAPER_SETTINGS = {
    "image_size": 256,
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-4,
    "optimizer": "adam",
    "schedule": "constant",
    "weights": "imagenet",
    "finetune": "full",
    "augment": True,
    "limit_per_class": None,
    "val_size": 0.0,  # the paper's curves are on its test side; ours on a side carved from training
}


PAPER_IMAGES = 3096


def paper_comparability(config: dict[str, Any], cv: int | None, prepare_info: dict[str, Any]) -> list[str]:
    """Why the 'Paper accuracy' column is not a like-for-like comparison: the settings in which
    this run departs from the paper, and the paper's own data, which kept duplicates."""
    changed = [
        f"{key.replace('_', ' ')} {config.get(key)} (paper: {'none' if value is None else value})"
        for key, value in PAPER_SETTINGS.items()
        if config.get(key, value) != value
    ]
    if cv:
        changed.append(f"{cv}-fold cross-validation (paper: one 80/20 split)")
    bullets = []
    if changed:
        bullets.append(
            "Settings differ from the paper's: "
            + "; ".join(changed)
            + ". The 'Paper accuracy' and 'Paper time' columns are shown for orientation, not as a "
            "like-for-like comparison."
        )
    kept = prepare_info.get("kept")
    bullets.append(
        f"The paper's accuracies come from {PAPER_IMAGES:,} images of the public dataset's 3,264. Removing "
        "exact pixel duplicates alone leaves 2,870, so the paper's set kept at least 226 exact duplicates, "
        "which a random split can put on both sides and so inflate its test scores. "
        + (f"Ours are measured on {kept:,} images with duplicates removed" if kept else "Ours are measured on data")
        + " and duplicate groups kept on one side of the split; lower numbers here need not mean a worse model."
    )
    return bullets
