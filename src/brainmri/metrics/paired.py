"""Comparing two models honestly: differences with confidence intervals that respect what
was paired.

Two sources of uncertainty, two tests:

* **across runs** (training seeds on one split, or folds): the corrected resampled t-test of
  Nadeau & Bengio (2003), whose variance ``(1/J + n_test/n_train) * s^2`` accounts for the runs
  sharing their data, where a plain t-test over J runs would be far too confident;
* **within one test set**: a paired bootstrap over the same images (each image's correctness
  averaged over the runs), optionally by cluster (near-duplicate groups resampled whole), and
  McNemar's exact test for two single runs.

Built on :mod:`scipy.stats` (the t distribution, ``bootstrap``, ``binomtest``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def corrected_t(
    diffs: Sequence[float], n_train: int, n_test: int, level: float = 0.95
) -> dict[str, float | int | None]:
    """Nadeau & Bengio's corrected resampled t-test of a per-run difference (model A - model B
    on the same split or fold, one value per run): mean, CI and two-sided p-value."""
    d = np.asarray(diffs, dtype=np.float64)
    j = len(d)
    out: dict[str, float | int | None] = {"runs": j, "mean": float(d.mean()) if j else None}
    if j < 2:
        return {**out, "low": None, "high": None, "p": None}
    var = (1.0 / j + n_test / n_train) * d.var(ddof=1)
    if var == 0:
        same = bool(np.all(d == 0))
        return {**out, "low": float(d.mean()), "high": float(d.mean()), "p": 1.0 if same else 0.0}
    se = float(np.sqrt(var))
    t = stats.t(df=j - 1)
    half = float(t.ppf(0.5 + level / 2)) * se
    p = float(2 * t.sf(abs(float(d.mean())) / se))
    return {**out, "low": float(d.mean()) - half, "high": float(d.mean()) + half, "p": p}


def _clustered(values: np.ndarray, clusters: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of ``values`` (rows: images, columns: quantities) and cluster sizes."""
    if clusters is None:
        return values, np.ones(len(values))
    keys, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.zeros((len(keys), values.shape[1]))
    np.add.at(sums, index, values)
    return sums, np.bincount(index).astype(np.float64)


def bootstrap_ratio(
    values: np.ndarray,
    weights: Sequence[float] | None = None,
    clusters: Sequence[str] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(estimate, low, high) of ``sum(values) / n`` over images, by a percentile bootstrap of
    the images, or of whole clusters when ``clusters`` names each image's cluster (a cluster
    bootstrap: near-duplicates are not counted as independent evidence).

    ``values`` has one entry per image (e.g. 1 if right); the estimate is their mean."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    sums, sizes = _clustered(v, clusters)
    estimate = float(v.mean())
    if len(sizes) < 2 or n_resamples < 1:
        return estimate, estimate, estimate
    res = stats.bootstrap(
        (sums[:, 0], sizes),
        lambda s, n, axis=-1: s.sum(axis=axis) / n.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return estimate, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    clusters: Sequence[str] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Accuracy of A minus accuracy of B on the same images, with a paired (and, with
    ``clusters``, cluster) bootstrap CI. ``correct_*`` may be fractions: an image's
    correctness averaged over several runs of a model."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired_bootstrap needs the two models' results on the same images")
    est, low, high = bootstrap_ratio(a - b, clusters=clusters, n_resamples=n_resamples, seed=seed, level=level)
    return {"mean": est, "low": low, "high": high, "n": int(len(a))}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test of two single runs on the same images: the discordant counts and
    the two-sided p-value of a binomial test on them."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = float(stats.binomtest(only_a, n, 0.5).pvalue) if n else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p": p}


def told_apart(*intervals: dict[str, Any]) -> bool:
    """Whether every given CI of a difference excludes zero (with a consistent sign)."""
    signs = set()
    for ci in intervals:
        if ci.get("low") is None or ci.get("high") is None:
            return False
        if ci["low"] <= 0 <= ci["high"]:
            return False
        signs.add(ci["low"] > 0)
    return len(signs) == 1
