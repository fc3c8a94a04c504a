"""The sections of a comparison repeated over training seeds: each architecture's mean and SD
across runs, and each pair's difference with two paired CIs (across runs: the corrected
resampled t-test; within the test set: a paired bootstrap of the same images), ending in one
sentence that says which depths can and cannot be told apart.

Reads only the runs' records (metrics.json, predictions.csv, split.csv), so it can be
rebuilt without a model.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data import splitfile
from brainmri.metrics import paired
from brainmri.metrics.predictions import read_predictions
from brainmri.render.document import fmt
from brainmri.rundir import PREDICTIONS_CSV, RunDir

LEVEL = "95%"


def pretty(arch: str) -> str:
    return arch.replace("resnet", "ResNet-") if arch.startswith("resnet") else arch


def _pm(values: list[float | None], digits: int = 3) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mean, sd = paired.mean_sd(vals)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def correctness(run_dir: str | Path, name: str | None = None) -> dict[str, bool]:
    """path -> whether the run's model was right, on its test side (or evaluation ``name``)."""
    run = RunDir(run_dir)
    path = (run.eval_dir(name) / PREDICTIONS_CSV) if name else run.predictions
    y, proba, paths, _ = read_predictions(path)
    return dict(zip(paths, (proba.argmax(1) == y).tolist(), strict=True))


def mean_correctness(runs: list[dict[str, Any]], name: str | None = None) -> dict[str, float]:
    """path -> the fraction of an architecture's runs that got the image right."""
    per_run = [correctness(r["path"], name) for r in runs]
    paths = sorted(set().union(*per_run)) if per_run else []
    # Seeds score every image in every run; folds each image once (in the fold that tests it).
    return {p: float(np.mean([c[p] for c in per_run if p in c])) for p in paths}


def side_sizes(run_dir: str | Path) -> tuple[int, int]:
    """(training images, test images) of a run's split: the correction of the t-test."""
    rows = splitfile.read_split(RunDir(run_dir).split)
    return sum(r["side"] == "train" for r in rows), sum(r["side"] == "test" for r in rows)


def _external_names(results: dict[str, dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(n for res in results.values() for r in res["runs"] for n in r.get("external", {})))


def pair_differences(
    results: dict[str, dict[str, Any]], name: str | None = None, clusters: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every pair of architectures: accuracy difference (first - second) with the corrected
    t-test over the seeds both ran, and a paired bootstrap over the images both were scored
    on (``name``: an external evaluation; ``clusters``: path -> cluster for a cluster bootstrap)."""
    out = []
    for a, b in itertools.combinations(results, 2):
        runs_a = {r["seed"]: r for r in results[a]["runs"]}
        runs_b = {r["seed"]: r for r in results[b]["runs"]}
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            continue

        def acc(run: dict[str, Any]) -> float | None:
            m = run.get("external", {}).get(name) if name else run["metrics"]
            return None if m is None else m["accuracy"]

        pairs = [(acc(runs_a[s]), acc(runs_b[s])) for s in seeds]
        diffs = [x - y for x, y in pairs if x is not None and y is not None]
        n_train, n_test = side_sizes(runs_a[seeds[0]]["path"])
        if name:  # the external set is not a resample of the split: its size is the test size
            n_test = len(correctness(runs_a[seeds[0]]["path"], name))
        t = paired.corrected_t(diffs, n_train, n_test)
        ca = mean_correctness([runs_a[s] for s in seeds], name)
        cb = mean_correctness([runs_b[s] for s in seeds], name)
        common = sorted(set(ca) & set(cb))
        groups = [clusters.get(p, p) for p in common] if clusters else None
        boot = paired.paired_bootstrap(
            np.array([ca[p] for p in common]), np.array([cb[p] for p in common]), clusters=groups
        )
        out.append({"a": a, "b": b, "seeds": seeds, "t_test": t, "bootstrap": boot,
                    "told_apart": paired.told_apart(t, boot)})  # fmt: skip
    return out


def verdict(pairs: list[dict[str, Any]], where: str) -> str:
    """One sentence: which pairs can and cannot be told apart."""
    apart = [p for p in pairs if p["told_apart"]]
    same = [p for p in pairs if not p["told_apart"]]

    def names(p: dict[str, Any]) -> str:
        return f"{pretty(p['a'])} vs {pretty(p['b'])}"

    if pairs and all(len(p["seeds"]) < 2 for p in pairs):
        # One run per model: the seed-to-seed spread is unknown, so no pair can be told apart;
        # say what the image bootstrap alone shows, so a reader sees why.
        boot = [p for p in pairs if paired.told_apart(p["bootstrap"])]
        rest = [p for p in pairs if p not in boot]
        shown = []
        if boot:
            shown.append("the paired bootstrap over images alone excludes zero for " + ", ".join(map(names, boot)))
        if rest:
            shown.append("not for " + ", ".join(map(names, rest)))
        return (
            f"On {where}, one run per model: the corrected t-test needs two seeds or more, so no pair is "
            f"told apart yet ({'; '.join(shown)})."
        )
    parts = []
    if apart:
        parts.append(
            "told apart: "
            + ", ".join(
                f"{names(p)} ({'higher' if p['t_test']['mean'] > 0 else 'lower'} by {abs(p['t_test']['mean']):.3f})"
                for p in apart
            )
        )
    if same:
        parts.append(
            "cannot be told apart: "
            + ", ".join(names(p) + (" (one run each: no t-test)" if len(p["seeds"]) < 2 else "") for p in same)
        )
    return f"On {where}, with both CIs required to exclude zero, " + "; ".join(parts) + "."


def _pair_rows(pairs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in pairs:
        t, boot = p["t_test"], p["bootstrap"]
        rows.append(
            [
                f"{pretty(p['a'])} − {pretty(p['b'])}",
                str(len(p["seeds"])),
                f"{t['mean']:+.3f}" if t["mean"] is not None else "–",
                f"{fmt(t['low'])} to {fmt(t['high'])}" if t["low"] is not None else "–",
                fmt(t["p"]),
                f"{boot['mean']:+.3f} ({boot['low']:+.3f} to {boot['high']:+.3f})",
                "yes" if p["told_apart"] else "no",
            ]
        )
    return rows


def repeats_sections(
    results: dict[str, dict[str, Any]], clusters: dict[str, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """The results table over seeds and the paired differences, test side then each external
    folder (``clusters``: external name -> path -> near-duplicate group, for its bootstrap)."""
    externals = _external_names(results)
    header = ["Model", "Runs (seeds)", "Test accuracy", "Test macro F1", "Test ECE"]
    header += [f"{n} accuracy" for n in externals] + ["Training time (s)", "Test accuracy per run"]
    rows = []
    for arch, res in results.items():
        runs = res["runs"]
        ms = [r["metrics"] for r in runs]
        row = [
            pretty(arch),
            f"{len(runs)} ({', '.join(str(r['seed']) for r in runs)})",
            _pm([m["accuracy"] for m in ms]),
            _pm([m["macro"]["f1"] for m in ms]),
            _pm([m.get("ece") for m in ms]),
        ]
        for ext in externals:
            row.append(_pm([r["external"][ext]["accuracy"] for r in runs if ext in r.get("external", {})]))
        row.append(_pm([(m.get("run") or {}).get("training_seconds") for m in ms], 0))
        row.append(", ".join(f"{m['accuracy']:.3f}" for m in ms))
        rows.append(row)
    sections: list[dict[str, Any]] = [
        {
            "heading": "Results over repeated runs",
            "text": [
                "Each architecture trained once per seed on the same split (the seed sets the weights' "
                "initialisation, the data order, augmentation and dropout, and the validation side carved from "
                "training). Mean ± sample standard deviation across runs; training time is wall-clock on this "
                "machine. The spread is the run-to-run variation of training, not the uncertainty of the test "
                "set, which the paired bootstrap below adds."
            ],
            "table": (header, rows),
        }
    ]
    return sections + pair_sections(results, clusters)


def pair_sections(
    results: dict[str, dict[str, Any]], clusters: dict[str, dict[str, str]] | None = None, unit: str = "seed"
) -> list[dict[str, Any]]:
    """The paired differences of every pair of architectures, on the test side and each
    external folder; ``unit`` is what pairs the runs (``seed``, or ``fold`` for k-fold runs)."""
    sections: list[dict[str, Any]] = []
    externals = _external_names(results)
    pair_header = [
        "Difference in accuracy",
        "Paired runs",
        "Mean over runs",
        f"{LEVEL} CI, corrected t-test",
        "p (t-test)",
        f"Paired bootstrap of images ({LEVEL} CI)",
        "Told apart",
    ]
    for name in [None, *externals]:
        pairs = pair_differences(results, name, (clusters or {}).get(name) if name else None)
        if not pairs:
            continue
        where = "the test side" if name is None else f"the external folder {name}"
        boot_text = (
            "a cluster bootstrap over its near-duplicate groups"
            if name and clusters and clusters.get(name)
            else "a paired bootstrap of the images"
        )
        sections.append(
            {
                "heading": f"Paired differences: {where}",
                "level": 3,
                "text": [
                    f"Accuracy of the first model minus the second, paired by {unit}. The corrected resampled "
                    "t-test (Nadeau & Bengio, 2003; variance (1/J + n_test/n_train)·s² over J runs) covers "
                    f"run-to-run variation; {boot_text} (each image's correctness averaged over the runs) "
                    "covers the sampling of the images. A pair is told apart only when both intervals exclude "
                    "zero.",
                    verdict(pairs, where),
                ],
                "table": (pair_header, _pair_rows(pairs)),
            }
        )
    return sections
