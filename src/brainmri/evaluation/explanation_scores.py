"""Do a model's explanations point at the tumour? Several explanation methods scored against
the tumour boxes of a labelled folder (:mod:`brainmri.metrics.localisation`), beside a centre prior
and a uniform map, with the method chosen on the boxes' ``select`` half and its score
reported on the ``report`` half; and an occlusion test of whether the model's decision
depends on the boxed region more than on a same-sized region elsewhere.

``brainmri evaluate RUN --data DIR --boxes CSV`` writes ``RUN/eval/NAME/localisation/``:
``localisation.json``, ``localisation.md``, ``slices.csv`` (one row per slice and method),
``misses.png`` (the worst misses) and ``examples.png`` (typical hits and misses).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text
from brainmri.inference.explain import Explainer, saliency_in_batches
from brainmri.inference.forward import probabilities
from brainmri.io.images import ImageError, read_gray
from brainmri.io.preprocess import stack, to_array
from brainmri.labels import canonical_label
from brainmri.metrics.localisation import (
    Box,
    centre_prior,
    control_rect,
    energy_inside,
    miss_distance,
    occlude,
    pointing_hit,
    read_boxes,
    uniform_scores,
)
from brainmri.metrics.paired import bootstrap_ratio
from brainmri.render.document import render_report

#: The candidates compared: today's map (the last stage), finer stages, two other methods of
#: pytorch-grad-cam, and maps made on an input enlarged twofold.
CANDIDATES = (
    Explainer("gradcam", "layer4"),
    Explainer("gradcam", "layer3"),
    Explainer("gradcam++", "layer3"),
    Explainer("layercam", "layer3"),
    Explainer("hirescam", "layer3"),
    Explainer("layercam", "layer2"),
    Explainer("gradcam", "layer4", 2),
    Explainer("layercam", "layer3", 2),
    Explainer("layercam", "layer2", 2),
)
TOLERANCES = (0.0, 0.1, 0.25)
#: The tolerance the choice and the headline use: the boxes come from another copy of each
#: slice and may be off by a few pixels (the datasets' README); stated before looking.
TOLERANCE = 0.1
CENTRE = "centre prior"
UNIFORM = "uniform map"


def _load(folder: Path, boxes: Sequence[Box], card: dict[str, Any]) -> tuple[list, list, list[dict]]:
    """Decoded slices (at the model's input size) with their boxes; unreadable ones reported."""
    arrays, kept, skipped = [], [], []
    classes = list(card["classes"])
    for box in boxes:
        try:
            label = canonical_label(box.label)
        except BrainMRIError as exc:
            skipped.append({"file": box.file, "reason": str(exc)})
            continue
        if label not in classes:
            skipped.append({"file": box.file, "reason": f"label {label} not known to the model"})
            continue
        try:
            gray = read_gray(folder / box.file)
        except (ImageError, BrainMRIError) as exc:
            skipped.append({"file": box.file, "reason": str(exc)})
            continue
        arrays.append(to_array(gray, card["image_size"], via=card.get("prepared_size")))
        kept.append((box, classes.index(label)))
    return arrays, kept, skipped


def _maps(model, arrays, targets, explainers: Sequence[Explainer], batch_size: int, device) -> dict[str, np.ndarray]:
    """Every explainer's maps, batch by batch, from one pass per input scale."""
    return saliency_in_batches(model, stack(arrays), targets, explainers, batch_size, device)


def _summary(values: Sequence[float], n_bootstrap: int, seed: int = 0) -> dict[str, float | int | None]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    est, lo, hi = bootstrap_ratio(v, n_resamples=n_bootstrap, seed=seed)
    return {"mean": est, "low": lo, "high": hi, "n": int(len(v))}


def _score_rows(name, maps, kept, size, target) -> list[dict[str, Any]]:
    rows = []
    for heat, (box, _) in zip(maps, kept, strict=True):
        row = {"method": name, "target": target, "file": box.file, "half": box.half, "label": box.label}
        for tol in TOLERANCES:
            row[f"hit_{tol:g}"] = float(pointing_hit(heat, box, tol))
        row["energy"] = energy_inside(heat, box)
        row["miss"] = miss_distance(heat, box)
        rows.append(row)
    return rows


def _baseline_rows(kept, size) -> list[dict[str, Any]]:
    prior = centre_prior(size)
    rows = []
    for box, _ in kept:
        c = {"method": CENTRE, "target": "-", "file": box.file, "half": box.half, "label": box.label}
        u = {"method": UNIFORM, "target": "-", "file": box.file, "half": box.half, "label": box.label}
        for tol in TOLERANCES:
            c[f"hit_{tol:g}"] = float(pointing_hit(prior, box, tol))
            u[f"hit_{tol:g}"] = uniform_scores(box, size, tol)[0]
        c["energy"], u["energy"] = energy_inside(prior, box), uniform_scores(box, size, 0.0)[1]
        c["miss"], u["miss"] = miss_distance(prior, box), float("nan")
        rows += [c, u]
    return rows


def _table(rows: list[dict[str, Any]], half: str, n_bootstrap: int) -> dict[str, dict[str, Any]]:
    """method/target -> pointing game at every tolerance and energy, overall and per class."""
    out: dict[str, dict[str, Any]] = {}
    keys = list(dict.fromkeys((r["method"], r["target"]) for r in rows))
    for method, target in keys:
        sel = [r for r in rows if r["method"] == method and r["target"] == target and r["half"] == half]
        entry: dict[str, Any] = {"method": method, "target": target}
        for tol in TOLERANCES:
            entry[f"pointing_{tol:g}"] = _summary([r[f"hit_{tol:g}"] for r in sel], n_bootstrap)
        entry["energy"] = _summary([r["energy"] for r in sel], n_bootstrap)
        entry["per_class"] = {
            label: {
                "pointing": _summary([r[f"hit_{TOLERANCE:g}"] for r in sel if r["label"] == label], n_bootstrap),
                "energy": _summary([r["energy"] for r in sel if r["label"] == label], n_bootstrap),
            }
            for label in sorted({r["label"] for r in sel})
        }
        out[f"{method} | {target}"] = entry
    return out


def occlusion_test(model, arrays, kept, flip: bool, device, n_bootstrap: int) -> dict[str, Any]:
    """Drop of the true class's probability when the box is covered (with the slice's mean
    grey) against when a same-sized region clear of it is covered; paired per slice."""
    size = arrays[0].shape[0]
    boxed, control = [], []
    for arr, (box, _) in zip(arrays, kept, strict=True):
        rect = box.pixels(size)
        fill = float(arr.mean())
        boxed.append(occlude(arr, rect, fill))
        control.append(occlude(arr, control_rect(rect, size), fill))
    labels = np.array([k[1] for k in kept])

    def true_p(batch: list[np.ndarray]) -> np.ndarray:
        p = probabilities(model, stack(batch), flip=flip, device=torch.device(device))
        return p[np.arange(len(labels)), labels]

    base, p_box, p_ctrl = true_p(arrays), true_p(boxed), true_p(control)
    drop_box, drop_ctrl = base - p_box, base - p_ctrl
    return {
        "fill": "the slice's mean grey",
        "control": "the box mirrored across the vertical midline (or moved to the far half where that overlaps)",
        "drop_box": _summary(drop_box, n_bootstrap),
        "drop_control": _summary(drop_ctrl, n_bootstrap),
        "difference": _summary(drop_box - drop_ctrl, n_bootstrap),
        "flipped_by_box": int(np.sum(p_box < 0.5)) - int(np.sum(base < 0.5)),
    }


def score_explanations(
    model: torch.nn.Module,
    card: dict[str, Any],
    folder: str | Path,
    boxes_csv: str | Path,
    out_dir: str | Path,
    explainers: Sequence[Explainer] = CANDIDATES,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    n_bootstrap: int = 1000,
    title: str = "",
) -> dict[str, Any]:
    """Score ``explainers`` on every boxed slice of ``folder``, choose one on the ``select``
    half, report it on the ``report`` half; write the folder's files; return the record."""
    started = time.perf_counter()
    folder, out_dir = Path(folder), Path(out_dir)
    arrays, kept, skipped = _load(folder, read_boxes(boxes_csv), card)
    if not arrays:
        raise BrainMRIError(f"none of the boxed slices of {boxes_csv} could be read from {folder}")
    flip = bool(card.get("tta"))
    model = model.to(device).eval()
    proba = probabilities(model, stack(arrays), flip=flip, device=torch.device(device))
    predicted = proba.argmax(1).tolist()
    truth = [k[1] for k in kept]
    size = arrays[0].shape[0]
    rows = _baseline_rows(kept, size)
    maps_of = _maps(model, arrays, predicted, explainers, batch_size, device)
    wrong = [i for i, (p, t) in enumerate(zip(predicted, truth, strict=True)) if p != t]
    true_of = {name: m.copy() for name, m in maps_of.items()}
    if wrong:  # the true class's map differs only where the prediction is wrong
        again = _maps(model, [arrays[i] for i in wrong], [truth[i] for i in wrong], explainers, batch_size, device)
        for name in true_of:
            true_of[name][wrong] = again[name]
    for ex in explainers:
        rows += _score_rows(ex.name, maps_of[ex.name], kept, size, "predicted")
        rows += _score_rows(ex.name, true_of[ex.name], kept, size, "true")
    tables = {half: _table(rows, half, n_bootstrap) for half in ("select", "report")}
    chosen = choose(tables["select"], [e.name for e in explainers])
    record = {
        "folder": str(folder),
        "boxes": str(boxes_csv),
        "slices": len(kept),
        "halves": {h: sum(b.half == h for b, _ in kept) for h in ("select", "report")},
        "correct": int(sum(p == t for p, t in zip(predicted, truth, strict=True))),
        "skipped": skipped,
        "tolerance": TOLERANCE,
        "tolerances": list(TOLERANCES),
        "image_size": size,
        "chosen": chosen,
        "chosen_on_report": tables["report"][f"{chosen} | predicted"],
        "tables": tables,
        "occlusion": occlusion_test(model, arrays, kept, flip, device, n_bootstrap),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(out_dir / "slices.csv", rows)
    atomic_write_text(out_dir / "localisation.json", json.dumps(record, indent=2) + "\n")
    chosen_maps = maps_of[chosen]
    from brainmri.evaluation.localisation_figures import examples_figure, misses_figure

    report_idx = [i for i, (b, _) in enumerate(kept) if b.half == "report"]
    misses_figure(out_dir / "misses.png", arrays, kept, chosen_maps, report_idx, chosen, card["classes"], predicted)
    examples_figure(out_dir / "examples.png", arrays, kept, chosen_maps, report_idx, chosen, TOLERANCE)
    render_report(out_dir, localisation_sections(record, out_dir, title), title="brainmri: where the model looks",
                  name="localisation")  # fmt: skip
    return record


def choose(select_table: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """The candidate with the highest pointing game on the select half (predicted class, the
    stated tolerance); ties go to the higher energy, then to the earlier candidate."""

    def key(name: str) -> tuple[float, float]:
        e = select_table[f"{name} | predicted"]
        return (e[f"pointing_{TOLERANCE:g}"]["mean"] or 0.0, e["energy"]["mean"] or 0.0)

    return max(names, key=key)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = ["method", "target", "file", "half", "label", *[f"hit_{t:g}" for t in TOLERANCES], "energy", "miss"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _ci(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "–"
    return f"{s['mean']:.3f} ({s['low']:.3f}–{s['high']:.3f})"


def method_table(table: dict[str, dict[str, Any]], target: str = "predicted") -> tuple[list[str], list[list[str]]]:
    header = ["Map", *[f"Pointing game, tolerance {t:g}" for t in TOLERANCES], "Energy inside the box"]
    rows = []
    for entry in table.values():
        if entry["target"] not in (target, "-"):
            continue
        rows.append([entry["method"], *[_ci(entry[f"pointing_{t:g}"]) for t in TOLERANCES], _ci(entry["energy"])])
    return header, rows


def localisation_sections(record: dict[str, Any], out_dir: Path, title: str = "") -> list[dict[str, Any]]:
    chosen, rep = record["chosen"], record["chosen_on_report"]
    centre = record["tables"]["report"][f"{CENTRE} | -"]
    occ = record["occlusion"]
    tol = f"{record['tolerance']:g}"
    text = [
        f"{record['slices']} boxed tumour slices of {record['folder']} ({record['halves']['select']} on the select "
        f"half, {record['halves']['report']} on the report half), {record['correct']} classified right. Maps of the "
        f"predicted class at {record['image_size']} px. Pointing game: the map's maximum inside the box grown by the "
        "tolerance (width and height times 1 + tolerance); energy: the share of the map's positive mass inside the "
        "box. 95% bootstrap CIs over the slices.",
        f"Chosen on the select half (highest pointing game at tolerance {tol}): **{chosen}**. On the report half it "
        f"hits {_ci(rep[f'pointing_{tol}'])} against {_ci(centre[f'pointing_{tol}'])} for the centre prior; energy "
        f"inside the box {_ci(rep['energy'])} against {_ci(centre['energy'])}.",
        f"Occlusion: covering the box lowers the true class's probability by {_ci(occ['drop_box'])}, covering a "
        f"same-sized region clear of it by {_ci(occ['drop_control'])} (difference {_ci(occ['difference'])}).",
    ]
    sections: list[dict[str, Any]] = [
        {"heading": "Where the model looks" + (f": {title}" if title else ""), "text": text},
        {"heading": "Report half (the figures to quote)", "level": 3,
         "table": method_table(record["tables"]["report"])},
        {"heading": "Select half (where the choice was made)", "level": 3,
         "table": method_table(record["tables"]["select"])},
        {"heading": "Maps of the true class, report half", "level": 3,
         "table": method_table(record["tables"]["report"], "true")},
        {"heading": "Typical hits and misses, and the worst misses", "level": 3,
         "figures": [(f"{chosen}: hits and misses (report half)", Path(out_dir) / "examples.png"),
                     (f"{chosen}: the worst misses (report half)", Path(out_dir) / "misses.png")]},
    ]  # fmt: skip
    return sections
