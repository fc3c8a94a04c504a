"""Accuracy of the random-split ResNet-50 on its test images with and without a copy (same
duplicate group) on its training side: the part of its held-out score that leakage buys.
Run from the reproduce folder: python leakage_by_copy.py scratch-random > leakage_by_copy.json"""

import csv
import json
import sys

import numpy as np

folder = sys.argv[1]
rows = list(csv.DictReader(open(f"{folder}/split.csv")))
train_groups = {r["group"] for r in rows if r["side"] == "train"}
group = {r["path"]: r["group"] for r in rows if r["side"] == "test"}
preds = list(csv.DictReader(open(f"{folder}/runs/resnet50/predictions.csv")))
rng = np.random.default_rng(42)
out = {}
for name, keep in (("with a copy in training", True), ("without a copy in training", False)):
    right = np.array([p["label"] == p["predicted"] for p in preds if (group[p["path"]] in train_groups) == keep])
    boot = [rng.choice(right, right.size).mean() for _ in range(2000)]
    out[name] = {
        "images": int(right.size),
        "accuracy": float(right.mean()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
    }
print(json.dumps(out, indent=2))
