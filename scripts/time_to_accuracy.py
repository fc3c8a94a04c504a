"""Time to accuracy: how long each recipe trains a ResNet-50 before its validation accuracy first
reaches a target (0.92 by default: the goal is 0.92 test accuracy within 25 minutes on 2 cores),
measured in one run on one machine so that the recipes compare fairly.

    python scripts/time_to_accuracy.py --data PREPARED --out runs/tta [--target 0.92] [--recipes today,batch-64]

Every recipe trains on the same split (the duplicate-aware 80/20 split, seed 42) with the same
validation side carved from training (10 %), validated every epoch; the test side is scored
once at the end and chooses nothing. Recipes: ``today`` (the scratch preset: 128 px, 40 epochs)
and the candidates below, each one lever away from it or a combination, trained to the end;
levers that change only the speed (channels-last, worker processes) are timed in short runs
paired with ``today``. Writes ``time_to_accuracy.json`` and ``time_to_accuracy.md`` in OUT;
resumable (finished runs are kept). A smoke run: ``--arch resnet18 --limit-per-class 20
--recipes 20-epochs --pairs 1 --pair-epochs 1`` (with ``--target 0``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

from brainmri.config import TrainConfig
from brainmri.evaluation.evaluate import evaluate_run, read_history
from brainmri.experiments.reproduce import PRESETS
from brainmri.files import atomic_write_text, read_json
from brainmri.training.run import train

#: The levers that change what is learnt, each one at a time away from ``today``, and
#: combinations: each trains to the end, and its time to the target is read off its history.
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
}

#: The levers that change only how fast the same arithmetic runs: their effect on the time to
#: the target is their effect on throughput, measured in short runs paired with ``today``
#: (``--pair-epochs`` epochs each, alternating which goes first), so that the machine's drift
#: cancels. Full runs of these would cost hours each to say the same.
THROUGHPUT_LEVERS: dict[str, dict] = {
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


def images_per_second(run: Path) -> float:
    """The run's median epoch rate (the first epoch's warm-up included in the median only)."""
    return median([r["images_per_second"] for r in read_history(run)])


def paired_ratio(pairs: list[tuple[float, float]]) -> dict:
    """Median of the pairs' lever/today rate ratios and their spread: >1 means the lever is faster."""
    ratios = [lever / today for today, lever in pairs]
    return {"ratio": median(ratios), "min": min(ratios), "max": max(ratios), "pairs": len(ratios)}


def _train(values: dict, run: Path) -> None:
    """Train ``values`` into ``run`` unless it finished; resume it if it was interrupted."""
    if not (run / "summary.json").is_file():
        resume = (run / "checkpoints" / "last.pt").is_file()
        train(TrainConfig.from_dict(values), run, resume=resume, overwrite=not resume and run.exists(), progress=False)


def run_recipes(base: dict, out: Path, names: list[str], target: float) -> dict:
    results = {}
    for name in names:
        run = out / name.replace(" ", "-")
        _train({**base, **RECIPES[name]}, run)
        if not (run / "metrics.json").is_file():
            evaluate_run(run, overwrite=True)
        history = read_history(run)
        summary = read_json(run / "summary.json")
        results[name] = {
            "settings": RECIPES[name],
            "target": time_to_target(history, target),
            "total_seconds": summary["total_seconds"],
            "median_images_per_second": images_per_second(run),
            "best_val_acc": summary["best_val_acc"],
            "test_accuracy": read_json(run / "metrics.json")["accuracy"],
        }
    return results


def run_levers(base: dict, out: Path, names: list[str], pairs: int, epochs: int) -> dict:
    """Each throughput lever against ``today`` in ``pairs`` pairs of short runs, alternating order."""
    results = {}
    for name in names:
        rates = []
        for i in range(pairs):
            runs = {}
            order = ("today", name) if i % 2 == 0 else (name, "today")
            for arm in order:
                runs[arm] = out / "throughput" / name.replace(" ", "-") / f"pair{i}" / arm.replace(" ", "-")
                settings = THROUGHPUT_LEVERS[name] if arm == name else {}
                _train({**base, **settings, "epochs": epochs}, runs[arm])
            rates.append((images_per_second(runs["today"]), images_per_second(runs[name])))
        results[name] = {"settings": THROUGHPUT_LEVERS[name], "epochs": epochs, "rates": rates, **paired_ratio(rates)}
    return results


def report(target: float, recipes: dict, levers: dict) -> str:
    lines = [
        f"| recipe | time to val {target:.2f} | epoch | whole run | images/s (median epoch) | best val | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in recipes.items():
        t = r["target"]
        reached = f"{t['seconds'] / 60:.1f} min" if t["reached"] else f"not reached ({t['seconds'] / 60:.1f} min)"
        lines.append(
            f"| {name} | {reached} | {t['epoch'] or '–'} | {r['total_seconds'] / 60:.1f} min | "
            f"{r['median_images_per_second']:.1f} | {r['best_val_acc']:.3f} | {r['test_accuracy']:.3f} |"
        )
    if levers:
        today = recipes.get("today", {}).get("target", {})
        lines += [
            "",
            "| throughput lever | pairs | epochs each | rate against today (median, min-max) "
            "| time to target, derived |",
            "|---|---|---|---|---|",
        ]
        for name, r in levers.items():
            derived = f"{today['seconds'] / r['ratio'] / 60:.1f} min" if today.get("reached") else "–"
            spread = f"{r['ratio']:.3f}x ({r['min']:.3f}-{r['max']:.3f})"
            lines.append(f"| {name} | {r['pairs']} | {r['epochs']} | {spread} | {derived} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", type=float, default=0.92, help="validation accuracy to reach (0.92)")
    dashed = {n.replace(" ", "-"): n for n in RECIPES}
    levers = {n.replace(" ", "-"): n for n in THROUGHPUT_LEVERS}
    parser.add_argument("--recipes", default=",".join(dashed), help="comma-separated RECIPES ('' for none)")
    parser.add_argument("--levers", default=",".join(levers), help="comma-separated THROUGHPUT_LEVERS ('' for none)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of short runs per throughput lever (3)")
    parser.add_argument("--pair-epochs", type=int, default=2, help="epochs of each short run (2)")
    parser.add_argument("--arch", default="resnet50", help="model (resnet50; smaller ones for a smoke run)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="fewer images, for a smoke run")
    args = parser.parse_args()

    def chosen(text: str, known: dict[str, str], flag: str) -> list[str]:
        asked = [n.strip().replace(" ", "-") for n in text.split(",") if n.strip()]
        if any(n not in known for n in asked):
            parser.error(f"{flag}: choose from {', '.join(known)}")
        return [known[n] for n in asked]

    names = chosen(args.recipes, dashed, "--recipes")
    lever_names = chosen(args.levers, levers, "--levers")
    out = Path(args.out)
    base = {**PRESETS["scratch"], "val_every": 1, "data": args.data, "arch": args.arch}
    if args.limit_per_class:
        base["limit_per_class"] = args.limit_per_class
    recipes = run_recipes(base, out, names, args.target)
    lever_results = run_levers(base, out, lever_names, args.pairs, args.pair_epochs)
    record = {"target": args.target, "arch": args.arch, "recipes": recipes, "throughput_levers": lever_results}
    atomic_write_text(out / "time_to_accuracy.json", json.dumps(record, indent=2) + "\n")
    table = report(args.target, recipes, lever_results)
    atomic_write_text(out / "time_to_accuracy.md", table)
    print(table, end="")


if __name__ == "__main__":
    main()
