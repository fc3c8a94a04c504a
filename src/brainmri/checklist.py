"""The reporting checklist of a comparison: the items that CLAIM (Checklist for Artificial
Intelligence in Medical Imaging, 2024 update) and TRIPOD+AI (2024) ask of an imaging AI
study, filled in from what the run recorded. An item the run cannot fill is listed as
missing, with the reason, never left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from brainmri import data as data_mod
from brainmri import splitfile
from brainmri.files import read_json
from brainmri.rundir import RunDir

MISSING = "MISSING"


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "no CI"


def _weights(card: dict[str, Any]) -> str:
    record = card.get("weights_record") or {}
    if not record:
        return f"{MISSING}: the card records only '{card.get('weights', '?')}' (a run from before weights records)"
    if record.get("kind") == "random initialisation":
        return "random initialisation (trained from scratch); no pretrained file"
    sha = record.get("sha256") or f"{MISSING} (file not found when the run started)"
    return f"{record.get('enum') or record.get('kind')}; file {record.get('file')}; SHA-256 {sha}"


def _disjointness(leakage: dict[str, Any] | None, split_by: str) -> str:
    if not leakage:
        return f"{MISSING}: no single train/test split to check (cross-validation folds)"
    crossing = leakage["crossing_groups"]
    verdict = (
        "disjoint: no duplicate group crosses the split"
        if crossing == 0
        else (
            f"NOT disjoint: {crossing} duplicate groups cross the split, "
            f"{leakage['test_images_with_training_copy']} test images have a copy in training"
        )
    )
    return f"split level {split_by}; checked on split.csv: {verdict}"


def _external(results: dict[str, dict[str, Any]]) -> str:
    names = sorted({n for r in results.values() for n in r.get("external", {})})
    if not names:
        return f"{MISSING}: no external folder was given (compare/reproduce --external DIR)"
    parts = []
    for name in names:
        accs = [
            f"{arch} {r['external'][name]['accuracy']:.3f} ({_ci(r['external'][name], 'accuracy')})"
            for arch, r in results.items()
            if name in r.get("external", {})
        ]
        parts.append(f"{name}: " + ", ".join(accs))
    return "; ".join(parts)


def checklist_rows(out: Path, results: dict[str, dict[str, Any]], meta: dict[str, Any], leakage, split_by) -> list:
    """(item, guideline, what this run records) rows."""
    archs = list(results)
    first = RunDir(results[archs[0]]["path"]) if results[archs[0]].get("path") else RunDir(out / "runs" / archs[0])
    if not first.config.is_file():  # cross-validation: the first fold's run
        first = RunDir(first.path / "fold0")
    config = read_json(first.config, {})
    env = read_json(first.environment, {})
    prepared = Path(config.get("data", ""))
    prep = read_json(prepared / data_mod.PREPARE_JSON, {})
    card_path = first.best
    card = {}
    if card_path.is_file():
        from brainmri.checkpoint import read_checkpoint

        card = read_checkpoint(card_path)["card"]
    counts: dict[str, dict[str, int]] = {}
    if first.split.is_file():
        for r in splitfile.read_split(first.split):
            side = counts.setdefault(r.get("side", "train"), {})
            side[r["label"]] = side.get(r["label"], 0) + 1
    manifest = _sha256(prepared / data_mod.MANIFEST)
    metrics = {a: r.get("metrics") or r.get("pooled") or {} for a, r in results.items()}
    summaries = {a: read_json(RunDir(results[a].get("path") or out / "runs" / a).summary, {}) for a in archs}
    if not any(summaries.values()):
        summaries = {a: read_json(RunDir(out / "runs" / a / "fold0").summary, {}) for a in archs}
    galleries = {a: r.get("gallery") for a, r in results.items()}
    pre = card.get("preprocessing") or {}
    return [
        ("Data source and provenance", "CLAIM, TRIPOD+AI",
         f"{meta.get('source') or prep.get('settings', {}).get('source', MISSING)}; prepared folder {prepared}; "
         f"manifest.csv SHA-256 {manifest or MISSING}"),
        ("Eligibility and data cleaning", "CLAIM, TRIPOD+AI",
         f"{prep.get('files', '?')} files read, {prep.get('kept', '?')} kept; removed "
         + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (prep.get("removed") or {}).items())
         + f" (perceptual-hash threshold {prep.get('settings', {}).get('phash_threshold', '?')})"),
        ("Preprocessing", "CLAIM",
         "; ".join(f"{k}: {v}" for k, v in pre.items() if k in ("decode", "resize", "in_model")) or MISSING),
        ("Split level and disjointness", "CLAIM, TRIPOD+AI", _disjointness(leakage, split_by)),
        ("Class counts per side", "CLAIM, TRIPOD+AI",
         "; ".join(f"{side}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for side, c in counts.items())
         or MISSING),
        ("Model and weights", "CLAIM, TRIPOD+AI",
         f"{', '.join(archs)} with the paper's head; weights: {_weights(card)}"),
        ("Training settings and seed", "CLAIM, TRIPOD+AI",
         f"{config.get('optimizer', '?')} lr {config.get('lr', '?')} {config.get('schedule', '?')}, "
         f"{config.get('epochs', '?')} epochs, batch {config.get('batch_size', '?')}, "
         f"{config.get('image_size', '?')} px, seed {config.get('seed', '?')}; the full config in each run's "
         "config.json"),
        ("Metrics with confidence intervals", "CLAIM, TRIPOD+AI",
         "; ".join(f"{a} accuracy {m['accuracy']:.3f} ({_ci(m, 'accuracy')}), macro F1 {m['macro']['f1']:.3f} "
                   f"({_ci(m, 'macro_f1')})" for a, m in metrics.items() if m) or MISSING),
        ("Calibration", "CLAIM, TRIPOD+AI",
         "; ".join(f"{a} ECE {m['ece']:.3f}" for a, m in metrics.items() if m.get("ece") is not None)
         + " (15 bins; reliability diagrams below)" if any(m.get("ece") is not None for m in metrics.values())
         else MISSING),
        ("External testing", "CLAIM, TRIPOD+AI", _external(results)),
        ("Failure analysis", "CLAIM",
         "; ".join(f"{a}: {g['misclassified']} misclassified held-out images shown with Grad-CAM" for a, g in
                   galleries.items() if g) or f"{MISSING}: no failure gallery (cross-validation runs)"),
        ("Software versions", "CLAIM, TRIPOD+AI",
         ", ".join(f"{k} {env[k]}" for k in ("brainmri", "python", "torch", "torchvision", "numpy") if env.get(k))
         or MISSING),
        ("Compute and time", "TRIPOD+AI",
         f"{env.get('hardware', '?')} ({env.get('device', '?')}, {env.get('precision', '?')}); training "
         + ", ".join(f"{a} {s['total_seconds']:.0f} s" for a, s in summaries.items() if s.get("total_seconds"))),
        ("Intended use and limitations", "CLAIM, TRIPOD+AI",
         f"{card.get('intended_use', MISSING)} {card.get('notice', '')}".strip()),
    ]  # fmt: skip


def checklist_section(out: Path, results, meta, leakage, split_by: str) -> dict[str, Any]:
    rows = [list(r) for r in checklist_rows(out, results, meta, leakage, split_by)]
    missing = sum(MISSING in r[2] for r in rows)
    return {
        "heading": "Reporting checklist (CLAIM 2024, TRIPOD+AI)",
        "text": [
            "What the checklists ask of an imaging AI study, filled in from what this comparison recorded. "
            + (
                f"{missing} item(s) could not be filled and are marked {MISSING}."
                if missing
                else "Every item is filled."
            )
        ],
        "table": (["Item", "Guideline", "This comparison"], rows),
    }
