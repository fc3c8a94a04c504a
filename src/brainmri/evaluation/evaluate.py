"""Evaluation of a trained run: the paper's metrics plus the statistics it lacked.

:func:`evaluate_run` loads a run's best checkpoint, predicts its held-out split (or any
labelled folder) through the one inference path (:mod:`brainmri.inference.forward`, fp32, with the
flip averaging the card asks for), computes :func:`brainmri.metrics.classification.compute_metrics`, and
writes ``metrics.json``, ``predictions.csv`` and the figures.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text, plain_name, shown
from brainmri.inference.forward import probabilities
from brainmri.inference.run_record import Run
from brainmri.inference.run_record import read_json_file as _read_json
from brainmri.io.preprocess import stack
from brainmri.metrics.classification import compute_metrics
from brainmri.metrics.predictions import read_predictions, write_labelled_predictions
from brainmri.metrics.records import CardMetrics, EvaluationMetrics
from brainmri.models.annex import write_annex
from brainmri.models.checkpoint import model_from_checkpoint, read_checkpoint
from brainmri.rundir import METRICS_JSON, PREDICTIONS_CSV, RunDir
from brainmri.runtime import resolve_device

# --- evaluating a run ----------------------------------------------------------------


def predict_proba(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    device: str = "auto",
    flip: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """Softmax probabilities for uint8 images (N, 1, H, W), batch by batch, on ``device``."""
    dev = resolve_device(device)
    return probabilities(model.to(dev), images, batch_size=batch_size, flip=flip, precision=precision, device=dev)


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of dicts of floats (empty if the run has none)."""
    path = RunDir(run_dir).history
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What the report says about training: losses averaged over epochs and training time."""
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    summary = _read_json(RunDir(run_dir).summary)

    def mean(key: str) -> float | None:
        values = [r[key] for r in history if key in r]
        return float(np.mean(values)) if values else summary.get(f"avg_{key}")

    last = history[-1] if history else {}
    return {
        "epochs": len(history) or summary.get("epochs"),
        "selection": summary.get("selection"),
        "best_epoch": summary.get("best_epoch"),
        "best_val_acc": summary.get("best_val_acc"),
        "avg_train_loss": mean("train_loss"),
        "avg_val_loss": mean("val_loss"),
        "final_train_acc": last.get("train_acc"),
        "final_val_acc": last.get("val_acc"),
        "training_seconds": summary.get("total_seconds"),
        "finished": summary.get("finished"),
    }


def _held_out(run: Run) -> tuple[torch.Tensor, np.ndarray, list[str], dict[str, Any]]:
    from brainmri.data.prepared import load_split

    prepared, split = run.config.get("data"), run.dir.split
    if run.data is None:
        raise BrainMRIError(
            f"the prepared data of run {run.path} ({prepared or 'not recorded'}) is not there; "
            "evaluate on a labelled folder instead with --data DIR"
        )
    if run.split is None:
        raise BrainMRIError(f"run {run.path} has no split.csv; evaluate on a labelled folder with --data DIR")
    # training/run.py resolves k-fold files into a single train/test split.csv; older or hand-made
    # runs may keep the k-fold file, which needs the fold.
    fold = run.fold
    images, labels, paths = load_split(run.prepared, split, "test", fold=fold, size=run.card["image_size"])
    source: dict[str, Any] = {"kind": "held-out", "prepared": str(prepared), "split": str(split), "fold": fold,
                              "skipped": []}  # fmt: skip
    return images, labels.numpy(), paths, source


def _folder(
    folder: Path,
    run: Run,
    label_map: str | dict[str, str] | None,
    keep_overlap: bool = False,
) -> tuple[torch.Tensor, np.ndarray, list[str], dict[str, Any], list[list[str]]]:
    """Any labelled folder, read with the same label aliases and preprocessing as training:
    images, labels, paths, the ``source`` record, and the input check's reasons about each
    source image (before resizing).

    Images that duplicate the run's training data are reported and, unless ``keep_overlap``,
    left out: they would make an external score look better than it is.
    """
    from brainmri.data.prepared import training_overlap
    from brainmri.evaluation.labelled_folder import read_labelled_folder

    card = run.card
    classes = list(card["classes"])
    prepared = run.config.get("data") or ""
    check = run.can_check_overlap()
    prep_size = run.prepared.size if check else None
    read = read_labelled_folder(folder, label_map, classes, card["image_size"], card.get("prepared_size"), prep_size)
    arrays, labels, paths = list(read.arrays), list(read.labels), list(read.paths)
    reasons = [list(r) for r in read.reasons]
    hashes, skipped = list(read.hashes), [dict(s) for s in read.skipped]
    overlap: list[dict[str, Any]] = []
    if check and paths:
        matches = training_overlap(run.prepared, run.dir.split, hashes, fold=run.fold)
        overlap = [{"path": p, **m} for p, m in zip(paths, matches, strict=True) if m is not None]
        if overlap and not keep_overlap:
            drop = {o["path"] for o in overlap}
            keep = [i for i, p in enumerate(paths) if p not in drop]
            arrays, labels, paths = [arrays[i] for i in keep], [labels[i] for i in keep], [paths[i] for i in keep]
            reasons = [reasons[i] for i in keep]
    if not arrays:
        reason = f"{len(skipped)} skipped" + (f", {len(overlap)} duplicating the training data" if overlap else "")
        raise BrainMRIError(f"no readable images of known classes in {folder} ({reason})")
    source = {
        "kind": "folder",
        "path": str(folder),
        "skipped": skipped,
        "overlap_check": "done"
        if check
        else f"not done: the run's prepared data ({prepared or 'not recorded'}) or split.csv is missing",
        "training_overlap": overlap,
        "training_overlap_excluded": bool(overlap) and not keep_overlap,
    }
    return stack(arrays), np.asarray(labels, dtype=np.int64), paths, source, reasons


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    label_map: str | dict[str, str] | None = None,
    name: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    figures: bool = True,
    keep_overlap: bool = False,
    tta: bool | None = None,
    overwrite: bool = False,
    boxes: str | Path | None = None,
) -> EvaluationMetrics:
    """Evaluate a run's best checkpoint on its held-out split, or on the labelled folder ``data``
    (leaving out, unless ``keep_overlap``, its images that duplicate the run's training data).

    Writes ``metrics.json``, ``predictions.csv`` and figures into the run folder (held-out
    split: ``figures/`` for the figures) or into ``eval/<name>/`` for another folder, records
    the headline metrics for the model card beside the checkpoint (``checkpoints/best.card.json``,
    :mod:`brainmri.models.annex`; ``best.pt`` itself is not rewritten), and returns the metrics. Earlier
    outputs are replaced only with ``overwrite`` (checked before any work).

    ``boxes`` (with ``data``): a CSV of tumour boxes in that folder; the explanations are then
    scored against them (:mod:`brainmri.evaluation.explanation_scores`, into ``eval/<name>/localisation/``)
    and the chosen explanation method, with its score, goes into the model card.
    """
    if boxes is not None and data is None:
        raise BrainMRIError("--boxes scores explanations on a labelled folder: give it with --data DIR")
    if boxes is not None and not Path(boxes).is_file():
        raise BrainMRIError(f"box file not found: {boxes}")
    from brainmri.render.figures import make_figures

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    ckpt_path = run.best
    if not ckpt_path.is_file():
        raise BrainMRIError(f"{run_dir} is not a finished run: {ckpt_path} not found")
    eval_name = plain_name(name or Path(data).resolve().name, "--name") if data is not None else ""
    named = data is not None
    _check_outputs(run.eval_dir(eval_name) if named else run_dir, overwrite, named=named)
    ckpt = read_checkpoint(ckpt_path)  # read once: the model, its card and the input check's statistics
    model, card = model_from_checkpoint(ckpt, ckpt_path)
    record = Run.read(run_dir, card)  # config.json, and on first use split.csv and the prepared folder
    classes = list(card["classes"])
    if data is None:
        images, y_true, paths, source = _held_out(record)
        out_dir, fig_dir = run_dir, run.figures
    else:
        folder = Path(data)
        images, y_true, paths, source, reasons = _folder(folder, record, label_map, keep_overlap)
        out_dir = fig_dir = run.eval_dir(eval_name)
    flip = bool(card.get("tta")) if tta is None else tta
    warnings = None
    if data is None:
        proba = predict_proba(model, images, batch_size=batch_size, device=device, flip=flip)
    else:
        proba, warnings, check = check_images(ckpt, model, images, reasons, batch_size, device, flip)
    from brainmri.provenance import provenance

    metrics = EvaluationMetrics(
        **compute_metrics(y_true, proba, classes, n_bootstrap=n_bootstrap, seed=seed),
        source=source,
        inference={"precision": "fp32", "flip_averaging": flip, "batch_size": batch_size},
        provenance=provenance(),  # the code that evaluated, which may be newer than the run's
    )
    if warnings is not None:
        metrics["input_check"] = {**check, "flagged": sum(w is not None for w in warnings), "of": len(warnings)}
    metrics["run"] = {
        "path": str(run_dir),
        "arch": card["arch"],
        "weights": card.get("weights"),
        "image_size": card["image_size"],
        **run_summary(run_dir),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_labelled_predictions(out_dir / PREDICTIONS_CSV, paths, y_true, proba, classes, warnings)
    if data is None and not run.val_predictions.is_file():  # training writes it; older runs lack it
        _write_val_predictions(record, model, batch_size, device)
    temperature = run_temperature(run_dir, card)
    if temperature is not None:
        from brainmri.metrics.calibration import calibration_scores

        metrics["temperature_scaling"] = {
            **calibration_scores(proba, y_true, temperature["value"], n_bootstrap=n_bootstrap, seed=seed),
            "fitted_on": temperature["fitted_on"],
        }
    if figures:
        figs = make_figures(fig_dir, metrics, y_true, proba, read_history(run_dir), title=card["arch"])
        metrics["figures"] = {k: str(v) for k, v in figs.items()}
    atomic_write_text(out_dir / METRICS_JSON, json.dumps(metrics, indent=2) + "\n")
    if boxes is not None and data is not None:  # boxes without data was refused at the start
        metrics["localisation"] = _score_boxes(model, card, Path(data), Path(boxes), out_dir, device, n_bootstrap)
        atomic_write_text(out_dir / METRICS_JSON, json.dumps(metrics, indent=2) + "\n")
    headline = card_metrics(metrics)
    card_all = dict(card.get("metrics") or {})  # the card as read above (with its annex): nothing has written it since
    if data is None:
        card_all.update(headline)
    else:
        card_all.setdefault("external", {})[eval_name] = headline
    fields: dict[str, Any] = {"metrics": card_all}
    if "localisation" in metrics:
        fields["explanation"] = metrics["localisation"]
    write_annex(ckpt_path, fields)  # beside best.pt, which stays as training wrote it
    return metrics


def _score_boxes(model, card, folder: Path, boxes: Path, out_dir: Path, device: str, n_bootstrap: int) -> dict:
    """Explanations scored against the boxes; returns the headline and puts the chosen method
    with its report-half score into the card (what predict and the web app then draw)."""
    from brainmri.evaluation.explanation_scores import TOLERANCE, score_explanations

    record = score_explanations(model, card, folder, boxes, out_dir / "localisation",
                                device=resolve_device(device), n_bootstrap=n_bootstrap, title=card["arch"])  # fmt: skip
    rep = record["chosen_on_report"]
    return {
        "chosen": record["chosen"],
        "tolerance": TOLERANCE,
        "pointing_game_report_half": rep[f"pointing_{TOLERANCE:g}"],
        "energy_report_half": rep["energy"],
        "boxes": str(boxes),
        "folder": "localisation",
    }


def run_temperature(run_dir: str | Path, card: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's temperature: the card's (fitted at the end of training), or one fitted now on
    its ``val_predictions.csv`` (runs trained before training fitted it); None without a
    validation side. Never fitted on the test side or an external folder."""
    if card and card.get("temperature"):
        fitted = (card.get("calibration") or {}).get("fitted_on", "the run's validation side")
        return {"value": float(card["temperature"]), "fitted_on": fitted}
    path = RunDir(run_dir).val_predictions
    if not path.is_file():
        return None
    from brainmri.metrics.calibration import fit_temperature

    y, proba, paths, _ = read_predictions(path)
    return {"value": fit_temperature(proba, y), "fitted_on": f"val_predictions.csv ({len(paths)} validation images)"}


def _write_val_predictions(run: Run, model, batch_size: int, device: str):
    """Probabilities on the run's validation side, if it has one, for a run trained before
    training wrote them: what a calibration (fitted on data carved from training, never on the
    test side) is fitted on, recomputable later. With the card's flip averaging, as training
    fits the temperature."""
    from brainmri.data.prepared import load_split

    if not run.split or "side" not in run.split[0] or not any(r["side"] == "val" for r in run.split):
        return
    images, labels, paths = load_split(run.prepared, run.dir.split, "val", size=run.card["image_size"])
    flip = bool(run.card.get("tta"))
    proba = predict_proba(model, images, batch_size=batch_size, device=device, flip=flip)
    write_labelled_predictions(run.dir.val_predictions, paths, labels.numpy(), proba, list(run.card["classes"]))


def _check_outputs(out_dir: Path, overwrite: bool, named: bool) -> None:
    """A finished evaluation into ``out_dir`` is replaced only with ``overwrite``. Its
    ``metrics.json`` is written last, so without it the evaluation was interrupted and is redone
    (as ``compare`` and ``reproduce`` do when they resume)."""
    if (out_dir / METRICS_JSON).exists() and not overwrite:
        raise BrainMRIError(
            f"{shown(out_dir)} already holds an evaluation (metrics.json); pass --overwrite to replace it"
            + (", or choose another --name" if named else "")
        )


def check_images(ckpt: dict[str, Any], model, images, reasons, batch_size: int, device: str, flip: bool = False):
    """Probabilities and input warnings (one forward pass) for ``evaluate --data``, and what was
    checked; ``ckpt`` is the checkpoint as read (:func:`brainmri.models.checkpoint.read_checkpoint`)."""
    from brainmri.inference.input_check import InputCheck

    check, dev = InputCheck.from_checkpoint(ckpt), resolve_device(device)
    proba, warnings, _ = check.classify(model.to(dev), images, reasons, batch_size=batch_size, device=dev, flip=flip)
    return proba, warnings, {"checks": check.status, "threshold": check.threshold}


def card_metrics(metrics: EvaluationMetrics) -> CardMetrics:
    """The few numbers a model card carries."""
    source = metrics.get("source") or {}
    return CardMetrics(
        n=metrics["n"],
        accuracy=metrics["accuracy"],
        accuracy_ci95=metrics["ci"]["accuracy"],
        macro_precision=metrics["macro"]["precision"],
        macro_recall=metrics["macro"]["recall"],
        macro_f1=metrics["macro"]["f1"],
        macro_f1_ci95=metrics["ci"]["macro_f1"],
        roc_auc_macro=metrics["roc_auc_macro"],
        ece=metrics["ece"],
        evaluated_on=source.get("path") or source.get("split"),
    )


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(metrics: EvaluationMetrics) -> str:
    """The metrics as plain-text tables for the terminal."""
    classes = metrics["classes"]
    width = max(len(c) for c in [*classes, "weighted avg"]) + 2
    head = f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'specif.':>10}{'roc_auc':>10}{'support':>9}"
    lines = [head]
    for c in classes:
        pc = metrics["per_class"][c]
        lines.append(
            f"{c:<{width}}{_f(pc['precision']):>10}{_f(pc['recall']):>10}{_f(pc['f1']):>10}"
            f"{_f(pc['specificity']):>10}{_f(pc['roc_auc']):>10}{pc['support']:>9d}"
        )
    for avg in ("macro", "weighted"):
        a = metrics[avg]
        auc = _f(metrics["roc_auc_macro"]) if avg == "macro" else ""
        lines.append(
            f"{avg + ' avg':<{width}}{_f(a['precision']):>10}{_f(a['recall']):>10}{_f(a['f1']):>10}"
            f"{'':>10}{auc:>10}{metrics['n']:>9d}"
        )
    ci = metrics["ci"]
    level = int(round(ci["level"] * 100))

    def interval(key: Literal["accuracy", "macro_f1"]) -> str:
        bounds = ci[key]
        return f" ({level}% CI {_f(bounds[0])}-{_f(bounds[1])})" if bounds else ""

    lines += [
        "",
        f"accuracy            {_f(metrics['accuracy'], 4)}{interval('accuracy')}",
        f"loss (cross-entropy) {_f(metrics.get('loss'), 4)}",
        f"macro F1            {_f(metrics['macro']['f1'])}{interval('macro_f1')}",
        f"ECE (15 bins)       {_f(metrics['ece'])}",
    ]
    run = metrics.get("run") or {}
    if run:
        secs = run.get("training_seconds")
        lines += [
            f"avg training loss   {_f(run.get('avg_train_loss'))}",
            f"avg validation loss {_f(run.get('avg_val_loss'))}",
            f"training time       {'-' if secs is None else f'{secs:.1f} s'}",
        ]
    cm = metrics["confusion_matrix"]
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    short = [c.removesuffix("_tumor")[:10] for c in classes]
    lines.append(f"{'':<{width}}" + "".join(f"{s:>11}" for s in short))
    for c, row in zip(classes, cm, strict=True):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>11d}" for v in row))
    loc = metrics.get("localisation")
    if loc:
        pg, en = loc["pointing_game_report_half"], loc["energy_report_half"]
        lines += [
            "",
            f"explanations: {loc['chosen']} chosen on the boxes' select half; on the report half its maximum falls "
            f"in the tumour box (grown {loc['tolerance']:g}) for {_f(pg['mean'])} of slices (95% CI {_f(pg['low'])}-"
            f"{_f(pg['high'])}), energy inside the box {_f(en['mean'])}; details in localisation/localisation.md",
        ]
    check = metrics.get("input_check")
    if check:
        lines += [
            "",
            f"{check['flagged']} of {check['of']} image(s) not like the training images "
            f"(input_warning in predictions.csv; checks: {check['checks']})",
        ]
    source = metrics.get("source") or {}
    skipped = source.get("skipped") or []
    if skipped:
        lines += ["", f"{len(skipped)} file(s) skipped:"] + [f"  {s['path']}: {s['reason']}" for s in skipped[:20]]
    overlap = source.get("training_overlap") or []
    if overlap:
        how = "left out" if source.get("training_overlap_excluded") else "KEPT (--keep-overlap): scores are inflated"
        lines += ["", f"{len(overlap)} image(s) duplicate the run's training data, {how}:"] + [
            f"  {o['path']} = {o['matches']}" + ("" if o["exact"] else f" (phash distance {o['phash_distance']})")
            for o in overlap[:20]
        ]
        if len(overlap) > 20:
            lines.append(f"  ... {len(overlap) - 20} more in metrics.json")
    elif source.get("overlap_check", "done") != "done":
        lines += ["", f"overlap with the training data {source['overlap_check']}"]
    return "\n".join(lines)
