"""Evaluation of a trained run: the paper's metrics plus the statistics it lacked.

:func:`compute_metrics` turns labels and predicted probabilities into every number the
report shows (scikit-learn metrics, expected calibration error, bootstrap confidence
intervals). :func:`evaluate_run` loads a run's best checkpoint, predicts its held-out
split (or any labelled folder), and writes ``metrics.json``, ``predictions.csv`` and the
figures.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from brainmri.checkpoint import read_checkpoint, update_card
from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text
from brainmri.images import ImageError, read_gray
from brainmri.input_check import source_reasons
from brainmri.preprocess import stack, to_array, to_input
from brainmri.runtime import resolve_device

#: Equal-width confidence bins for the expected calibration error (Guo et al., 2017).
ECE_BINS = 15


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability-diagram bins on the top-class probability and the expected calibration error.

    Bin ``i`` holds confidences in ``(i/n, (i+1)/n]``; ECE is the count-weighted mean gap
    between each bin's accuracy and its mean confidence.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    nonempty = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=nonempty)
    mean_acc = np.divide(acc_sum, counts, out=np.zeros(n_bins), where=nonempty)
    ece = float(np.sum(np.abs(mean_acc - mean_conf) * counts) / max(len(y_true), 1))
    return {
        "ece": ece,
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": counts.astype(int).tolist(),
        "confidence": [float(c) if n else None for c, n in zip(mean_conf, counts, strict=True)],
        "accuracy": [float(a) if n else None for a, n in zip(mean_acc, counts, strict=True)],
    }


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
    return calibration_bins(y_true, proba, n_bins)["ece"]


def _accuracy_macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 for a stack of resamples (rows), vectorised for the bootstrap.

    F1 per class is 2TP / (2TP + FP + FN), averaged over the classes of ``present`` (those of
    the whole evaluated set) that occur in the resample, as truth or prediction: a small class
    that a resample happens to miss is undefined there, not a perfect 0.
    """
    n = y_true.shape[1]
    offsets = (np.arange(y_true.shape[0]) * k * k)[:, None]
    cm = np.bincount((offsets + y_true * k + y_pred).ravel(), minlength=y_true.shape[0] * k * k)
    cm = cm.reshape(-1, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.full_like(tp, np.nan), where=denom > 0)
    return tp.sum(axis=1) / n, np.nanmean(f1[:, present], axis=1)


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap confidence intervals for accuracy and macro F1.

    Test sets of a few hundred images give intervals several points wide; the paper's
    one-decimal accuracies cannot be told apart without them. Macro F1 averages over the
    classes of the whole test set, as the point estimate does, in every resample.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0 or n_resamples <= 0:
        return {"level": level, "n_resamples": 0, "seed": seed, "accuracy": None, "macro_f1": None}
    present = np.unique(y_true)
    rng = np.random.default_rng(seed)
    accs, f1s = [], []
    for start in range(0, n_resamples, 200):  # chunks keep memory small on large test sets
        rows = min(200, n_resamples - start)
        idx = rng.integers(0, len(y_true), size=(rows, len(y_true)))
        acc, f1 = _accuracy_macro_f1(y_true[idx], y_pred[idx], num_classes, present)
        accs.append(acc)
        f1s.append(f1)
    tail = (1.0 - level) / 2 * 100
    out: dict[str, Any] = {"level": level, "n_resamples": n_resamples, "seed": seed}
    for name, values in (("accuracy", np.concatenate(accs)), ("macro_f1", np.concatenate(f1s))):
        lo, hi = np.percentile(values, [tail, 100 - tail])
        out[name] = [float(lo), float(hi)]
    return out


def roc_auc_ovr(y_true: np.ndarray, proba: np.ndarray) -> tuple[list[float | None], float | None]:
    """One-vs-rest ROC-AUC per class and their mean; None for a class absent from ``y_true``
    (or present alone), where the AUC is undefined."""
    per_class: list[float | None] = []
    for k in range(proba.shape[1]):
        positives = y_true == k
        if positives.all() or not positives.any():
            per_class.append(None)
        else:
            per_class.append(float(roc_auc_score(positives, proba[:, k])))
    defined = [v for v in per_class if v is not None]
    return per_class, (float(np.mean(defined)) if defined else None)


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of the report from true labels and predicted probabilities (N, K).

    Macro and weighted averages run over the classes present in ``y_true``: an external set
    without, say, ``normal`` images must not score that class as 0 and drag the averages
    down. Its per-class recall and F1 are None (undefined); its precision is 0 when the model
    predicted it anyway (every such prediction is wrong), None when it never did. Those
    wrong predictions still count against accuracy and the present classes' recall.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise BrainMRIError(f"probabilities have shape {proba.shape}, expected ({len(y_true)}, {k})")
    if len(y_true) == 0:
        raise BrainMRIError("no images to evaluate")
    labels = list(range(k))
    present = sorted({int(v) for v in y_true})
    y_pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    predicted = np.bincount(y_pred, minlength=k)
    averages = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=avg, zero_division=0)
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    row = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row, out=np.zeros(cm.shape), where=row > 0)
    tn = cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + np.diag(cm)
    fp = cm.sum(axis=0) - np.diag(cm)
    specificity = [float(t / (t + q)) if t + q > 0 else None for t, q in zip(tn, fp, strict=True)]
    auc_per_class, auc_macro = roc_auc_ovr(y_true, proba)
    calib = calibration_bins(y_true, proba)
    per_class = {
        name: {
            "precision": float(p[i]) if s[i] > 0 or predicted[i] > 0 else None,
            "recall": float(r[i]) if s[i] > 0 else None,
            "f1": float(f[i]) if s[i] > 0 else None,
            "specificity": specificity[i],
            "support": int(s[i]),
            "roc_auc": auc_per_class[i],
        }
        for i, name in enumerate(classes)
    }
    return {
        "n": int(len(y_true)),
        "classes": list(classes),
        "classes_evaluated": [classes[i] for i in present],
        "accuracy": float((y_pred == y_true).mean()),
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": cm_norm.tolist(),
        "roc_auc_macro": auc_macro,
        "ece": calib["ece"],
        "calibration": calib,
        "ci": bootstrap_ci(y_true, y_pred, k, n_resamples=n_bootstrap, seed=seed),
    }


# --- evaluating a run ----------------------------------------------------------------


@torch.inference_mode()
def predict_proba(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64, device: str = "auto"
) -> np.ndarray:
    """Softmax probabilities for uint8 images (N, 1, H, W), batch by batch."""
    if batch_size < 1:
        raise BrainMRIError(f"--batch-size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    model = model.eval().to(dev)
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_input(images[start : start + batch_size]).to(dev)
        out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of dicts of floats (empty if the run has none)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BrainMRIError(f"{path} is not valid JSON: {exc}") from None


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What the report says about training: losses averaged over epochs and training time."""
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    summary = _read_json(run_dir / "summary.json")

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


def _held_out(run_dir: Path, card: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray, list[str], dict[str, Any]]:
    from brainmri.data import load_split

    config = _read_json(run_dir / "config.json")
    prepared = config.get("data")
    split = run_dir / "split.csv"
    if not prepared or not Path(prepared).is_dir():
        raise BrainMRIError(
            f"the prepared data of run {run_dir} ({prepared or 'not recorded'}) is not there; "
            "evaluate on a labelled folder instead with --data DIR"
        )
    if not split.is_file():
        raise BrainMRIError(f"run {run_dir} has no split.csv; evaluate on a labelled folder with --data DIR")
    # train.py resolves k-fold files into a single train/test split.csv; older or hand-made
    # runs may keep the k-fold file, which needs the fold.
    fold = _split_fold(split, config)
    images, labels, paths = load_split(prepared, split, "test", fold=fold, size=card["image_size"])
    source = {"kind": "held-out", "prepared": str(prepared), "split": str(split), "fold": fold, "skipped": []}
    return images, labels.numpy(), paths, source


def _folder(
    folder: Path,
    card: dict[str, Any],
    label_map: str | dict[str, str] | None,
    run_dir: Path,
    keep_overlap: bool = False,
) -> tuple[torch.Tensor, np.ndarray, list[str], dict[str, Any]]:
    """Any labelled folder, read with the same label aliases and preprocessing as training.

    Images that duplicate the run's training data are reported and, unless ``keep_overlap``,
    left out: they would make an external score look better than it is.
    """
    from brainmri.data import PREPARE_JSON, image_hashes, prepared_size, scan, training_overlap

    classes = list(card["classes"])
    config = _read_json(run_dir / "config.json")
    prepared = Path(config.get("data") or "")
    split = run_dir / "split.csv"
    check = bool(config.get("data")) and (prepared / PREPARE_JSON).is_file() and split.is_file()
    prep_size = prepared_size(prepared) if check else None
    arrays, labels, paths, hashes, skipped, reasons = [], [], [], [], [], []
    for row in scan(folder, label_map):
        if row["label"] not in classes:
            skipped.append({"path": row["source_path"], "reason": f"label {row['label']} not known to the model"})
            continue
        try:
            gray = read_gray(folder / row["source_path"])
        except ImageError as exc:
            skipped.append({"path": row["source_path"], "reason": str(exc)})
            continue
        arrays.append(to_array(gray, card["image_size"], via=card.get("prepared_size")))
        reasons.append(source_reasons(gray))
        if prep_size is not None:
            hashes.append(image_hashes(to_array(gray, prep_size)))
        labels.append(classes.index(row["label"]))
        paths.append(row["source_path"])
    overlap: list[dict[str, Any]] = []
    if check and paths:
        matches = training_overlap(prepared, split, hashes, fold=_split_fold(split, config))
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
        "input_reasons": reasons,  # taken out by evaluate_run
    }
    return stack(arrays), np.asarray(labels, dtype=np.int64), paths, source


def _split_fold(split: Path, config: dict[str, Any]) -> int | None:
    """The run's fold when its split.csv is a k-fold file (older runs); None for a single split."""
    with split.open(encoding="utf-8") as fh:
        return config.get("fold") if "fold" in fh.readline().strip().split(",") else None


def write_predictions(
    path: Path, paths: Sequence[str], y_true: np.ndarray, proba: np.ndarray, classes, warnings=None
) -> None:
    """One row per image, so figures and error analysis can be redone without the model; with
    ``warnings`` (``evaluate --data``) a last column ``input_warning`` (:mod:`brainmri.input_check`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes], *(["input_warning"] * bool(warnings))])
    for i, (p, t, row) in enumerate(zip(paths, y_true, proba, strict=True)):
        extra = [warnings[i] or ""] if warnings else []
        writer.writerow([p, classes[int(t)], classes[int(row.argmax())], *[f"{v:.6f}" for v in row], *extra])
    atomic_write_text(path, buf.getvalue())


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(y_true, proba, paths, classes) from a ``predictions.csv``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    cols = [i for i, h in enumerate(header) if i >= 3 and h.startswith("p_")]
    classes = [header[i][2:] for i in cols]
    y_true = np.array([classes.index(r[1]) for r in rows], dtype=np.int64)
    proba = np.array([[float(r[i]) for i in cols] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
    return y_true, proba, [r[0] for r in rows], classes


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
) -> dict[str, Any]:
    """Evaluate a run's best checkpoint on its held-out split, or on the labelled folder ``data``
    (leaving out, unless ``keep_overlap``, its images that duplicate the run's training data).

    Writes ``metrics.json``, ``predictions.csv`` and figures into the run folder (held-out
    split: ``figures/`` for the figures) or into ``eval/<name>/`` for another folder, stores
    the headline metrics in the checkpoint's model card, and returns the metrics.
    """
    from brainmri.report import make_figures

    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "best.pt"
    if not ckpt_path.is_file():
        raise BrainMRIError(f"{run_dir} is not a finished run: {ckpt_path} not found")
    from brainmri.checkpoint import load_model

    model, card = load_model(ckpt_path)
    classes = list(card["classes"])
    if data is None:
        images, y_true, paths, source = _held_out(run_dir, card)
        out_dir, fig_dir = run_dir, run_dir / "figures"
    else:
        folder = Path(data)
        images, y_true, paths, source = _folder(folder, card, label_map, run_dir, keep_overlap)
        name = name or folder.resolve().name
        if not name or "/" in name or name in (".", ".."):
            raise BrainMRIError(f"bad evaluation name {name!r}; pass --name NAME")
        out_dir = fig_dir = run_dir / "eval" / name
    warnings = None
    if data is None:
        proba = predict_proba(model, images, batch_size=batch_size, device=device)
    else:
        proba, warnings, check = check_images(ckpt_path, model, images, source.pop("input_reasons"), batch_size, device)
    metrics = compute_metrics(y_true, proba, classes, n_bootstrap=n_bootstrap, seed=seed)
    metrics["source"] = source
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
    write_predictions(out_dir / "predictions.csv", paths, y_true, proba, classes, warnings)
    if figures:
        figs = make_figures(fig_dir, metrics, y_true, proba, read_history(run_dir), title=card["arch"])
        metrics["figures"] = {k: str(v) for k, v in figs.items()}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    headline = card_metrics(metrics)
    card_all = dict(read_checkpoint(ckpt_path)["card"].get("metrics") or {})
    if data is None:
        card_all.update(headline)
    else:
        card_all.setdefault("external", {})[name] = headline
    update_card(ckpt_path, metrics=card_all)
    return metrics


def check_images(ckpt_path: Path, model, images, reasons, batch_size: int, device: str):
    """Probabilities and input warnings (one forward pass) for ``evaluate --data``, and what was checked."""
    from brainmri.input_check import InputCheck

    check, dev = InputCheck.from_checkpoint(read_checkpoint(ckpt_path)), resolve_device(device)
    proba, warnings, _ = check.classify(model.to(dev), images, reasons, batch_size=batch_size, device=dev)
    return proba, warnings, {"checks": check.status, "threshold": check.threshold}


def card_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a model card carries."""
    return {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "accuracy_ci95": metrics["ci"]["accuracy"],
        "macro_precision": metrics["macro"]["precision"],
        "macro_recall": metrics["macro"]["recall"],
        "macro_f1": metrics["macro"]["f1"],
        "macro_f1_ci95": metrics["ci"]["macro_f1"],
        "roc_auc_macro": metrics["roc_auc_macro"],
        "ece": metrics["ece"],
        "evaluated_on": metrics["source"].get("path") or metrics["source"].get("split"),
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(metrics: dict[str, Any]) -> str:
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

    def interval(key: str) -> str:
        return f" ({level}% CI {_f(ci[key][0])}-{_f(ci[key][1])})" if ci.get(key) else ""

    lines += [
        "",
        f"accuracy            {_f(metrics['accuracy'])}{interval('accuracy')}",
        f"macro F1            {_f(metrics['macro']['f1'])}{interval('macro_f1')}",
        f"ECE (15 bins)       {_f(metrics['ece'])}",
    ]
    run = metrics.get("run", {})
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
    check = metrics.get("input_check")
    if check:
        lines += [
            "",
            f"{check['flagged']} of {check['of']} image(s) not like the training images "
            f"(input_warning in predictions.csv; checks: {check['checks']})",
        ]
    source = metrics.get("source", {})
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
