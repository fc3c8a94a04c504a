"""Metric maths, no I/O: every number a report shows, from true labels and predicted
probabilities (scikit-learn metrics, cross-entropy, expected calibration error, bootstrap
confidence intervals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from brainmri.errors import BrainMRIError
from brainmri.metrics.records import Averages, BootstrapCI, CalibrationBins, ClassMetrics, Metrics

#: Probabilities are clipped here before a log, so that one confident mistake gives a large,
#: finite loss rather than infinity.
MIN_PROBABILITY = 1e-12


def cross_entropy(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-image cross-entropy, -log p(true class), from probabilities: the validation and
    evaluation loss, with or without flip averaging."""
    labels = np.asarray(labels, dtype=np.int64)
    return -np.log(np.clip(proba[np.arange(len(labels)), labels], MIN_PROBABILITY, None))


#: Equal-width confidence bins for the expected calibration error (Guo et al., 2017).
ECE_BINS = 15


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> CalibrationBins:
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
    return CalibrationBins(
        ece=ece,
        edges=np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        count=counts.astype(int).tolist(),
        confidence=[float(c) if n else None for c, n in zip(mean_conf, counts, strict=True)],
        accuracy=[float(a) if n else None for a, n in zip(mean_acc, counts, strict=True)],
    )


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
) -> BootstrapCI:
    """Percentile bootstrap confidence intervals for accuracy and macro F1.

    Test sets of a few hundred images give intervals several points wide; the paper's
    one-decimal accuracies cannot be told apart without them. Macro F1 averages over the
    classes of the whole test set, as the point estimate does, in every resample.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0 or n_resamples <= 0:
        return BootstrapCI(level=level, n_resamples=0, seed=seed, accuracy=None, macro_f1=None)
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

    def interval(values: list[np.ndarray]) -> list[float]:
        lo, hi = np.percentile(np.concatenate(values), [tail, 100 - tail])
        return [float(lo), float(hi)]

    return BootstrapCI(level=level, n_resamples=n_resamples, seed=seed, accuracy=interval(accs), macro_f1=interval(f1s))


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
) -> Metrics:
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
    averages: dict[str, Averages] = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=avg, zero_division=0)
        averages[avg] = Averages(precision=float(ap), recall=float(ar), f1=float(af))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    row = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row, out=np.zeros(cm.shape), where=row > 0)
    tn = cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + np.diag(cm)
    fp = cm.sum(axis=0) - np.diag(cm)
    specificity = [float(t / (t + q)) if t + q > 0 else None for t, q in zip(tn, fp, strict=True)]
    auc_per_class, auc_macro = roc_auc_ovr(y_true, proba)
    calib = calibration_bins(y_true, proba)
    per_class = {
        name: ClassMetrics(
            precision=float(p[i]) if s[i] > 0 or predicted[i] > 0 else None,
            recall=float(r[i]) if s[i] > 0 else None,
            f1=float(f[i]) if s[i] > 0 else None,
            specificity=specificity[i],
            support=int(s[i]),
            roc_auc=auc_per_class[i],
        )
        for i, name in enumerate(classes)
    }
    return Metrics(
        n=int(len(y_true)),
        classes=list(classes),
        classes_evaluated=[classes[i] for i in present],
        accuracy=float((y_pred == y_true).mean()),
        loss=float(cross_entropy(proba, y_true).mean()),
        macro=averages["macro"],
        weighted=averages["weighted"],
        per_class=per_class,
        confusion_matrix=cm.astype(int).tolist(),
        confusion_matrix_normalized=cm_norm.tolist(),
        roc_auc_macro=auc_macro,
        ece=calib["ece"],
        calibration=calib,
        ci=bootstrap_ci(y_true, y_pred, k, n_resamples=n_bootstrap, seed=seed),
    )
