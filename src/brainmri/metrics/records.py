"""Typed records of the metric dictionaries that cross modules: what
:func:`brainmri.metrics.classification.compute_metrics` returns, what evaluation adds before it
writes ``metrics.json``, and the headline a model card carries.

They are TypedDicts rather than dataclasses because ``metrics.json`` is their stored form: the
same object is written with ``json.dumps`` and read back with ``json.loads``, and a reader of an
older file gets exactly the keys it holds. A type checker (mypy, which CI runs) sees every key.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Averages(TypedDict):
    """Macro or weighted averages over the classes present in the evaluated set."""

    precision: float
    recall: float
    f1: float


class ClassMetrics(TypedDict):
    """One class's scores; None where the class is undefined in the set (absent from it)."""

    precision: float | None
    recall: float | None
    f1: float | None
    specificity: float | None
    support: int
    roc_auc: float | None


class CalibrationBins(TypedDict):
    """Reliability-diagram bins of the top-class probability and the expected calibration error."""

    ece: float
    edges: list[float]
    count: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]


class BootstrapCI(TypedDict):
    """Percentile bootstrap intervals [low, high]; None when nothing was resampled."""

    level: float
    n_resamples: int
    seed: int
    accuracy: list[float] | None
    macro_f1: list[float] | None


class Metrics(TypedDict):
    """Every metric of one evaluation, from true labels and predicted probabilities."""

    n: int
    classes: list[str]
    classes_evaluated: list[str]
    accuracy: float
    loss: float
    macro: Averages
    weighted: Averages
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    confusion_matrix_normalized: list[list[float]]
    roc_auc_macro: float | None
    ece: float
    calibration: CalibrationBins
    ci: BootstrapCI


class EvaluationMetrics(Metrics):
    """``metrics.json`` of an evaluation: the metrics, plus what was evaluated, how, by which
    code, and what else was measured. The added keys are optional: pooled k-fold metrics carry
    only figures, and older files lack the newer keys."""

    source: NotRequired[dict[str, Any]]
    inference: NotRequired[dict[str, Any]]
    provenance: NotRequired[dict[str, Any]]
    input_check: NotRequired[dict[str, Any]]
    run: NotRequired[dict[str, Any]]
    temperature_scaling: NotRequired[dict[str, Any]]
    figures: NotRequired[dict[str, str]]
    localisation: NotRequired[dict[str, Any]]


class CardMetrics(TypedDict):
    """The few numbers of an evaluation that a model card carries."""

    n: int
    accuracy: float
    accuracy_ci95: list[float] | None
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_f1_ci95: list[float] | None
    roc_auc_macro: float | None
    ece: float
    evaluated_on: str | None
