"""The cost of leakage, measured: the same recipe trained on a duplicate-aware split and on
the paper's random split, each model scored on its own test side and on the external
folders, side by side.

A random split puts copies of one image on both sides, so its test side partly repeats the
training data and its accuracy rises; the external folders, which neither model saw, show
whether the model got better or only the test got easier. The two comparisons are ordinary
``compare`` folders (``--split-policy group`` and ``random``); this module reads their
``results.json`` and writes ``leakage.md``, ``leakage.html`` and ``leakage.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text, read_json
from brainmri.report import render_report

POLICIES = ("group", "random")


def _ci(entry: dict[str, Any]) -> str:
    lo, hi = entry["accuracy_ci95"] or (None, None)
    return f"{entry['accuracy']:.3f} ({lo:.3f}–{hi:.3f})" if lo is not None else f"{entry['accuracy']:.3f}"


def leakage_study(group_dir: str | Path, random_dir: str | Path) -> dict[str, Any]:
    """Held-out and external accuracy of each architecture under both policies."""
    found = {p: read_json(Path(d) / "results.json") for p, d in zip(POLICIES, (group_dir, random_dir), strict=True)}
    for policy, res in found.items():
        if res is None:
            raise BrainMRIError(f"no results.json in the {policy}-split comparison; run it to the end first")
    archs = [a for a in found["random"]["archs"] if a in found["group"]["archs"]]
    if not archs:
        raise BrainMRIError("the two comparisons share no architecture")
    rows = []
    for arch in archs:
        entry: dict[str, Any] = {"arch": arch}
        for policy in POLICIES:
            res = found[policy]["archs"][arch]
            entry[policy] = {"held_out": res["held_out"], "external": res["external"]}
        rows.append(entry)
    return {
        "group_dir": str(group_dir),
        "random_dir": str(random_dir),
        "leakage": {p: found[p].get("leakage") for p in POLICIES},
        "archs": rows,
    }


def table(study: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    externals = list(dict.fromkeys(n for r in study["archs"] for p in POLICIES for n in r[p]["external"]))
    header = ["Model", "Split", "Test images", "Test images with a copy in training", "Held-out accuracy (95% CI)"]
    header += [f"{n} accuracy (95% CI)" for n in externals] + ["Held-out minus external"]
    rows = []
    for r in study["archs"]:
        for policy in POLICIES:
            leak = study["leakage"].get(policy) or {}
            held = r[policy]["held_out"]
            ext = [r[policy]["external"].get(n) for n in externals]
            gap = f"{held['accuracy'] - ext[0]['accuracy']:+.3f}" if ext and ext[0] else "–"
            rows.append(
                [
                    r["arch"].replace("resnet", "ResNet-"),
                    "duplicate groups kept apart" if policy == "group" else "random (duplicates kept, the paper's)",
                    str(held["n"]),
                    str(leak.get("test_images_with_training_copy", "?")),
                    _ci(held),
                    *[_ci(e) if e else "–" for e in ext],
                    gap,
                ]
            )
    return header, rows


def findings(study: dict[str, Any]) -> list[str]:
    """The difference in words, one sentence per architecture."""
    lines = []
    for r in study["archs"]:
        g, q = r["group"], r["random"]
        text = (
            f"{r['arch'].replace('resnet', 'ResNet-')}: the random split scores {q['held_out']['accuracy']:.3f} on "
            f"its own test side against {g['held_out']['accuracy']:.3f} for the duplicate-aware split "
            f"({q['held_out']['accuracy'] - g['held_out']['accuracy']:+.3f})"
        )
        for name, ext in q["external"].items():
            if name in g["external"]:
                text += (
                    f"; on {name}, which neither saw, {ext['accuracy']:.3f} against "
                    f"{g['external'][name]['accuracy']:.3f} ({ext['accuracy'] - g['external'][name]['accuracy']:+.3f})"
                )
        lines.append(text + ".")
    return lines


def leakage_section(study: dict[str, Any], rel: Path | None = None) -> dict[str, Any]:
    """The leakage study as a report section."""
    leak = study["leakage"].get("random") or {}
    text = [
        "The same recipe trained twice: on the duplicate-aware split used everywhere else in this report, and on "
        "the paper's random split of every readable file, duplicates kept. Each model is scored on its own test "
        "side and on the external folders. "
        f"Under the random split, {leak.get('crossing_groups', '?')} duplicate groups cross the split and "
        f"{leak.get('test_images_with_training_copy', '?')} of {leak.get('test_images', '?')} test images have a "
        "copy in training.",
        *findings(study),
    ]
    if rel is not None:
        text.append(f"Details: {rel.as_posix()}/leakage.md.")
    return {"heading": "The cost of leakage", "text": text, "table": table(study)}


def write_leakage_report(group_dir: str | Path, random_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """``leakage.md``, ``leakage.html`` and ``leakage.json`` in ``out``; returns the study."""
    study = leakage_study(group_dir, random_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leakage.json", json.dumps(study, indent=2) + "\n")
    render_report(out, [leakage_section(study)], title="brainmri: the cost of leakage", name="leakage")
    return study
