"""The two arms of the controlled leakage study, drawn so that only the leakage differs.

A comparison of the paper's random split with a duplicate-aware one confounds leakage with
everything else that differs between them: how many images train, their class mix, the
number of optimiser steps and the test set. Here both arms share:

* **one test set**: one image per duplicate group (the one prepare kept), from groups drawn
  per class; no image in it is a copy of another;
* **the same number of training images per class** (so the same class mix, and the same
  number of steps for the same recipe).

The ``group`` arm trains on the kept images of every other group (no copy of a test image).
The ``random`` arm draws the same number of images per class at random from every readable
file that is not a test image, duplicates included, as a random split of files would: copies
of test images, and of each other, can be among them. Groups whose files carry different
labels are left out of both arms.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data.splits import all_readable_rows, pick_groups
from brainmri.labels import CLASSES

ARMS = ("group", "random")


def leakage_splits(prepared: str | Path, seed: int, test_size: float = 0.2) -> dict[str, Any]:
    """``{"group": rows, "random": rows, "copies": {test path: has a copy in the random arm's
    training}, "counts": ...}``; rows are split rows (path, label, group, side)."""
    rows = all_readable_rows(prepared)
    by_group: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    clean = {g: members for g, members in by_group.items() if len({m["label"] for m in members}) == 1}
    # The representative of a group is the image prepare kept (a path inside the prepared folder).
    reps = {}
    for g, members in clean.items():
        kept = [m for m in members if not Path(m["path"]).is_absolute()]
        reps[g] = (kept or members)[0]
    test_groups = pick_groups(list(reps.values()), test_size, seed)
    test = [reps[g] for g in sorted(test_groups)]
    test_paths = {r["path"] for r in test}
    pool_group = [reps[g] for g in sorted(reps) if g not in test_groups]
    pool_random = [m for g in sorted(clean) for m in clean[g] if m["path"] not in test_paths]
    rng = np.random.default_rng([seed, 0x1EA4])
    train_random: list[dict[str, str]] = []
    for label in CLASSES:
        want = sum(r["label"] == label for r in pool_group)
        candidates = sorted((r for r in pool_random if r["label"] == label), key=lambda r: r["path"])
        picked = rng.choice(len(candidates), size=min(want, len(candidates)), replace=False)
        train_random += [candidates[i] for i in sorted(picked)]
    random_groups = {r["group"] for r in train_random}

    def side(rs: list[dict[str, str]], name: str) -> list[dict[str, str]]:
        return [{"path": r["path"], "label": r["label"], "group": r["group"], "side": name} for r in rs]

    copies = {r["path"]: r["group"] in random_groups for r in test}
    unique_random = len({r["group"] for r in train_random})
    return {
        "group": side(pool_group, "train") + side(test, "test"),
        "random": side(train_random, "train") + side(test, "test"),
        "copies": copies,
        "counts": {
            "test": len(test),
            "train_per_class": {c: sum(r["label"] == c for r in pool_group) for c in CLASSES},
            "train": len(pool_group),
            "random_train_distinct_groups": unique_random,
            "random_train_copies_of_test": sum(r["group"] in test_groups for r in train_random),
            "test_with_copy_in_random_train": sum(copies.values()),
            "left_out_label_conflict_groups": len(by_group) - len(clean),
        },
    }
