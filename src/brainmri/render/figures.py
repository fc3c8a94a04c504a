"""Figures (matplotlib, PNG) of one evaluation: confusion matrix, curves, per-class bars,
ROC, reliability diagram.

Figures are drawn from what evaluation writes (``metrics.json``, ``predictions.csv``,
``history.csv``), so they can be redrawn without a model. They use matplotlib's object API
(:func:`figure`), so importing this module switches no backend for the process.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from brainmri.files import atomic_write_bytes

#: Figure files of one evaluation, in the order a report shows them.
FIGURES = ("confusion_matrix.png", "curves.png", "per_class.png", "roc.png", "reliability.png")
DPI = 110


def _short(name: str) -> str:
    """Axis-friendly class name: ``meningioma_tumor`` -> ``meningioma``."""
    return name.removesuffix("_tumor").replace("_", " ")


def figure(**kwargs: Any) -> Figure:
    """A figure drawn with matplotlib's object API on an Agg canvas: no pyplot state, no
    backend switched for the process, safe in server threads."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_confusion(metrics: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Counts and row-normalised confusion matrices side by side (the paper's Figs. 4-6)."""
    names = [_short(c) for c in metrics["classes"]]
    counts = np.asarray(metrics["confusion_matrix"])
    norm = np.asarray(metrics["confusion_matrix_normalized"])
    fig = figure(figsize=(11.5, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, mat, fmt, sub in (
        (axes[0], counts, "{:d}", "counts"),
        (axes[1], norm, "{:.2f}", "row-normalised (recall on the diagonal)"),
    ):
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                value = int(mat[i, j]) if fmt == "{:d}" else float(mat[i, j])
                ax.text(
                    j,
                    i,
                    fmt.format(value),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=11,
                )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(sub)
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.01, label="fraction of true class")
    fig.suptitle(title or f"Confusion matrix (n = {metrics['n']})")
    return _save(fig, path)


def plot_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training and validation accuracy and loss per epoch."""
    epochs = [int(r["epoch"]) for r in history]
    fig = figure(figsize=(11, 4))
    acc_ax, loss_ax = fig.subplots(1, 2)
    for ax, key, label in ((acc_ax, "acc", "accuracy"), (loss_ax, "loss", "cross-entropy loss")):
        for side, style in (("train", "o-"), ("val", "s--")):
            rows = [r for r in history if r.get(f"{side}_{key}") is not None]  # --val-every skips epochs
            values = [float(r[f"{side}_{key}"]) for r in rows]
            ax.plot(
                [int(r["epoch"]) for r in rows], values, style, label="training" if side == "train" else "validation"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize() + " per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else np.linspace(epochs[0], epochs[-1], 11).round())
    acc_ax.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_per_class(metrics: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Precision, recall and F1 per class as grouped bars (the paper's Fig. 3)."""
    classes = metrics["classes"]
    names = [_short(c) for c in classes]
    x = np.arange(len(classes))
    width = 0.26
    fig = figure(figsize=(9, 4.2))
    ax = fig.subplots()
    for i, key in enumerate(("precision", "recall", "f1")):
        values = [metrics["per_class"][c][key] for c in classes]
        heights = [np.nan if v is None else v for v in values]  # undefined (class absent): no bar
        bars = ax.bar(x + (i - 1) * width, heights, width, label={"recall": "recall (sensitivity)"}.get(key, key))
        ax.bar_label(bars, labels=["–" if v is None else f"{v:.2f}" for v in values], fontsize=8, padding=1)
    ax.set_xticks(x, names)
    ax.set_xlabel("class")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.2)
    ax.legend(loc="upper center", ncols=3, fontsize=9)
    ax.set_title(title or "Precision, recall and F1 per class")
    return _save(fig, path)


def plot_roc(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """One-vs-rest ROC curve per class, with its AUC in the legend."""
    from sklearn.metrics import auc

    y_true = np.asarray(y_true)
    fig = figure(figsize=(5.6, 5.2))
    ax = fig.subplots()
    for k, name in enumerate(classes):
        positives = y_true == k
        if positives.all() or not positives.any():
            ax.plot([], [], label=f"{_short(name)} (no examples)")
            continue
        fpr, tpr, _ = roc_curve(positives, proba[:, k])
        ax.plot(fpr, tpr, lw=2, label=f"{_short(name)} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title or "ROC curves, one class vs rest")
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(metrics: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Reliability diagram: accuracy against confidence per bin, bar widths equal to bins."""
    cal = metrics["calibration"]
    edges = np.asarray(cal["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    acc = np.array([a if a is not None else 0.0 for a in cal["accuracy"]])
    counts = np.asarray(cal["count"])
    fig = figure(figsize=(5.6, 6), layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centers, acc, width=np.diff(edges), edgecolor="black", alpha=0.8, label="accuracy in bin")
    conf = np.array([c if c is not None else np.nan for c in cal["confidence"]])
    ax.plot(centers[counts > 0], conf[counts > 0], "r.", ms=8, label="mean confidence in bin")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"Reliability diagram (ECE {cal['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=9)
    hist.bar(centers, counts, width=np.diff(edges), edgecolor="black", color="grey")
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("images")
    hist.set_xlim(0, 1)
    return _save(fig, path)


def make_figures(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    y_true: np.ndarray,
    proba: np.ndarray,
    history: Sequence[dict[str, Any]] | None = None,
    title: str = "",
) -> dict[str, Path]:
    """All figures of one evaluation into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    figs = {
        "confusion_matrix.png": plot_confusion(
            metrics, out / "confusion_matrix.png", f"{prefix}confusion matrix (n = {metrics['n']})"
        ),
    }
    if history:
        figs["curves.png"] = plot_curves(history, out / "curves.png", f"{prefix}training curves" if title else "")
    figs["per_class.png"] = plot_per_class(metrics, out / "per_class.png", f"{prefix}precision, recall and F1")
    figs["roc.png"] = plot_roc(y_true, proba, metrics["classes"], out / "roc.png", f"{prefix}ROC, one vs rest")
    figs["reliability.png"] = plot_reliability(
        metrics, out / "reliability.png", f"{prefix}reliability (ECE {metrics['ece']:.3f})"
    )
    return figs
