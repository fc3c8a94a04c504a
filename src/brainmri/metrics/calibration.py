"""Temperature scaling: one number that makes a model's probabilities honest without changing
any prediction.

The temperature ``T`` rescales the log-probabilities, ``p_T ∝ p^(1/T)`` (for a single forward
pass the same as dividing the logits by ``T``; with flip averaging it scales the averaged
probabilities), so the most probable class never changes. It is fitted by minimising the
negative log-likelihood on a validation side carved from training, never on the test side or
an external folder, and is stored in the model card, where :mod:`brainmri.inference.forward` applies
it for evaluation, prediction, the web app and ONNX sessions alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize

#: Bounds of a fitted temperature: beyond them a validation side is too small or degenerate.
T_RANGE = (0.05, 20.0)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, C) rescaled by ``temperature`` (1: unchanged)."""
    if temperature == 1.0:
        return proba
    logp = np.log(np.clip(proba, 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def nll(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = proba[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-300, None)).mean())


def brier(proba: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot truth (0 best, 2 worst)."""
    onehot = np.eye(proba.shape[1])[labels]
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(proba: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (a bounded search over log T)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("no validation images to fit a temperature on")
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = optimize.minimize_scalar(
        lambda log_t: nll(apply_temperature(proba, float(np.exp(log_t))), labels), bounds=(lo, hi), method="bounded"
    )
    return float(np.exp(res.x))


def calibration_scores(
    proba: np.ndarray, labels: np.ndarray, temperature: float, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """NLL, Brier score and ECE before and after ``temperature``, each with a 95% bootstrap CI."""
    from brainmri.metrics.classification import expected_calibration_error
    from brainmri.metrics.paired import bootstrap_ratio

    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, Any] = {"temperature": temperature, "n": int(len(labels))}
    for key, p in (("before", proba), ("after", apply_temperature(proba, temperature))):
        true_p = np.clip(p[np.arange(len(labels)), labels], 1e-300, None)
        per_nll = -np.log(true_p)
        per_brier = ((p - np.eye(p.shape[1])[labels]) ** 2).sum(axis=1)
        entry = {}
        for name, values in (("nll", per_nll), ("brier", per_brier)):
            est, low, high = bootstrap_ratio(values, n_resamples=n_bootstrap, seed=seed)
            entry[name] = {"value": est, "ci95": [low, high]}
        entry["ece"] = {"value": expected_calibration_error(labels, p), "ci95": _ece_ci(p, labels, n_bootstrap, seed)}
        out[key] = entry
    return out


def _ece_ci(proba: np.ndarray, labels: np.ndarray, n_bootstrap: int, seed: int) -> list[float | None]:
    from scipy import stats

    from brainmri.metrics.classification import expected_calibration_error

    if n_bootstrap < 1 or len(labels) < 2:
        return [None, None]
    res = stats.bootstrap(
        (np.arange(len(labels)),),
        lambda i: expected_calibration_error(labels[i], proba[i]),
        vectorized=False,
        n_resamples=n_bootstrap,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]
