"""Time to accuracy: how long each recipe trains a ResNet-50 before its validation accuracy first
reaches a target (0.92 by default: the goal is 0.92 test accuracy within 25 minutes on 2 cores),
measured in one run on one machine so that the recipes compare fairly.

    python scripts/time_to_accuracy.py --data PREPARED --out runs/tta [--target 0.92] [--recipes today,batch-64]

Every recipe trains on the same split (the duplicate-aware 80/20 split, seed 42) with the same
validation side carved from training (10 %), validated every epoch; the test side is scored
once at the end and chooses nothing. Recipes: ``today`` (the scratch preset: 128 px, 40 epochs)
and the candidates below, each one lever away from it or a combination. Writes
``time_to_accuracy.json`` and ``time_to_accuracy.md`` in OUT; resumable (finished runs are kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainmri.config import TrainConfig
from brainmri.evaluation.evaluate import evaluate_run, read_history
from brainmri.experiments.reproduce import PRESETS
from brainmri.files import read_json
from brainmri.training.run import train

#: The speed levers, each one at a time away from ``today``, and a combination.
#: Pass ``--recipes`` to run a subset; every run is resumable, so the list can be run in parts.
RECIPES: dict[str, dict] = {
    "today": {},
    # fewer epochs: the one-cycle schedule is compressed, not cut
    "30 epochs": {"epochs": 30},
    "20 epochs": {"epochs": 20},
    # progressive resizing: 64 px for the first 35 %, 96 px for the next 30 %, then 128 px
    "progressive": {"progressive": "64:0.35,96:0.3"},
    "progressive 30 epochs": {"epochs": 30, "progressive": "64:0.35,96:0.3"},
    # a larger batch with the learning rate scaled linearly (32 -> 64, 2e-3 -> 4e-3)
    "batch 64": {"batch_size": 64, "lr": 4e-3},
    # channels-last is today's default: this measures what it is worth
    "no channels-last": {"channels_last": False},
    # dataloading overlap: augmentation in 2 worker processes instead of the training process
    "workers 2": {"workers": 2},
}


def time_to_target(history: list[dict], target: float) -> dict:
    """Training seconds (validation included) until the first epoch at or above ``target``."""
    spent = 0.0
    for row in history:
        spent += row["seconds"]
        if row.get("val_acc", 0.0) >= target:
            return {"reached": True, "epoch": int(row["epoch"]), "seconds": spent}
    return {"reached": False, "epoch": None, "seconds": spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", type=float, default=0.92, help="validation accuracy to reach (0.92)")
    parser.add_argument(
        "--recipes", default=",".join(n.replace(" ", "-") for n in RECIPES), help="comma-separated names of RECIPES"
    )
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    names = {n.replace(" ", "-"): n for n in RECIPES}
    asked = [n.strip().replace(" ", "-") for n in args.recipes.split(",")]
    if any(n not in names for n in asked):
        parser.error(f"--recipes: choose from {', '.join(names)}")
    for name in (names[n] for n in asked):
        values = {**PRESETS["scratch"], "val_every": 1, "data": args.data, "arch": "resnet50", **RECIPES[name]}
        run = out / name.replace(" ", "-")
        if not (run / "summary.json").is_file():
            resume = (run / "checkpoints" / "last.pt").is_file()
            train(TrainConfig.from_dict(values), run, resume=resume, overwrite=not resume and run.exists())
        if not (run / "metrics.json").is_file():
            evaluate_run(run, overwrite=True)
        history = read_history(run)
        summary = read_json(run / "summary.json")
        results[name] = {
            "settings": RECIPES[name],
            "target": time_to_target(history, args.target),
            "total_seconds": summary["total_seconds"],
            "median_images_per_second": sorted(r["images_per_second"] for r in history)[len(history) // 2],
            "best_val_acc": summary["best_val_acc"],
            "test_accuracy": read_json(run / "metrics.json")["accuracy"],
        }
    (out / "time_to_accuracy.json").write_text(json.dumps({"target": args.target, "recipes": results}, indent=2))
    lines = [
        f"| recipe | time to val {args.target:.2f} | epoch | whole run | images/s (median epoch) | best val | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t = r["target"]
        reached = f"{t['seconds'] / 60:.1f} min" if t["reached"] else f"not reached ({t['seconds'] / 60:.1f} min)"
        lines.append(
            f"| {name} | {reached} | {t['epoch'] or '–'} | {r['total_seconds'] / 60:.1f} min | "
            f"{r['median_images_per_second']:.1f} | {r['best_val_acc']:.3f} | {r['test_accuracy']:.3f} |"
        )
    (out / "time_to_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
