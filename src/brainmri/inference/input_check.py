"""Is a slice like the images the model was trained on? A warning, not a refusal.

A classifier answers for any input: a blank PNG or a photograph of a cat gets "glioma,
p=0.93" as readily as an MRI slice. Every prediction therefore carries an input check
(``predict``, ``serve``, ``evaluate --data``):

* cheap checks on the decoded source image, before resizing: too small (a side under
  :data:`MIN_SIDE` px), near-constant (grey-level spread under :data:`MIN_STD`), too few
  grey levels (binary or posterised, e.g. a 1-bit DICOM), or in colour (:data:`MAX_CHROMA`);
* a model-independent score (:mod:`brainmri.inference.image_stats`): the Mahalanobis distance of the
  slice's own statistics (grey levels, the dark background, the head's size, shape and place,
  texture) to the training side's. It holds for a weak model, whose feature score does not;
* an out-of-distribution score from the model itself: the Mahalanobis distance of the
  backbone's pooled features (the penultimate layer, before the head) to the nearest class
  mean, with one covariance shared by the classes (Lee et al., 2018), estimated with
  Ledoit-Wolf shrinkage so that 2048 dimensions can be fitted from a few thousand images.
  It runs in the same forward pass as the prediction (:func:`brainmri.inference.forward.probabilities_with`).

The score's threshold is calibrated on the run's training side (:func:`calibrate_input_check`,
called at the end of training and by ``brainmri calibrate RUN`` for older runs): the
:data:`PERCENTILE` th percentile of training-side scores, each computed with statistics fitted
on the other folds (grouped by duplicate group), so that the threshold is not set on images
the statistics have seen. The card records the method and threshold (``card["input_check"]``);
the statistics (a D x D transform) are stored in the checkpoint beside the weights by training,
beside the checkpoint by a later ``brainmri calibrate`` (:mod:`brainmri.models.annex`), and an
ONNX export computes the score in its graph (output ``ood_score``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from brainmri.errors import BrainMRIError
from brainmri.inference.run_record import Run
from brainmri.rundir import RunDir

if TYPE_CHECKING:
    from brainmri.inference.forward import Model
    from brainmri.inference.image_stats import ImageStatisticsScore

#: Smallest source side accepted as a slice (the training images' smallest side is 167 px).
MIN_SIDE = 64
#: Grey-level standard deviation (0..255) under which an image is near-constant (training: >= 21).
MIN_STD = 4.0
#: Distinct grey levels under which an image is binary or posterised (training: >= 129).
MIN_LEVELS = 16
#: Colour (:func:`brainmri.io.images.chroma`, 0..1) above which an image is not an MRI slice:
#: Sartaj's 3,264 files are all 0, the external set's 850 at most 0.020 (JPEG colour noise);
#: scikit-image's photographs score 0.15 to 0.44.
MAX_CHROMA = 0.05
#: Percentile of the training side's (cross-fitted) scores used as the threshold.
PERCENTILE = 99.5
#: Folds of the cross-fitting that scores each training image with statistics it was not in.
FOLDS = 5
METHOD = "mahalanobis"
#: Name of the score's output in an ONNX export, and the checkpoint key of the statistics.
ONNX_OUTPUT = "ood_score"
STATS_KEY = "input_check"
_IN_CHECKPOINT = f"in the checkpoint under '{STATS_KEY}'"
PREFIX = "not like the training images: "


def source_reasons(gray: np.ndarray, chroma: float = 0.0) -> list[str]:
    """Why a decoded source image (uint8, before resizing; ``chroma`` of the file it came from)
    is not like an MRI slice; [] if it may be."""
    h, w = gray.shape[:2]
    reasons = []
    if chroma > MAX_CHROMA:
        reasons.append(f"in colour (chroma {chroma:.2f}; MRI slices are grey)")
    if min(h, w) < MIN_SIDE:
        reasons.append(f"too small ({w}x{h})")
    std = float(gray.std()) if gray.size else 0.0
    if std < MIN_STD:
        reasons.append(f"near-constant (grey-level spread {std:.1f})")
    else:
        levels = int(np.count_nonzero(np.bincount(gray.ravel(), minlength=256)))
        if levels < MIN_LEVELS:
            reasons.append(f"only {levels} grey levels (binary or posterised)")
    return reasons


def warning_text(reasons: list[str]) -> str | None:
    """The one-line warning shown in tables, JSON and the page; None when there is nothing to say."""
    return PREFIX + "; ".join(reasons) if reasons else None


class MahalanobisScore(nn.Module):
    """Features (N, D) -> distance to the nearest class mean (N,), in whitened coordinates.

    ``transform`` (D, D) whitens with the shared precision matrix; ``centres`` (K, D) are the
    class means already transformed. Buffers, so the score travels inside an ONNX export.
    """

    transform: torch.Tensor
    centres: torch.Tensor

    def __init__(self, transform: torch.Tensor, centres: torch.Tensor):
        super().__init__()
        self.register_buffer("transform", transform.float())
        self.register_buffer("centres", centres.float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = features.float() @ self.transform
        d2 = (z.unsqueeze(1) - self.centres.unsqueeze(0)).pow(2).sum(-1)
        return d2.min(dim=1).values.clamp_min(0).sqrt()


def ledoit_wolf(resid: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance of centred rows (n, D), as scikit-learn's ``LedoitWolf(
    assume_centered=True)`` computes it, from one Gram matrix: scikit-learn's blockwise loop
    takes a minute at D = 2048 on a small CPU, this a tenth of a second. The D x D matrices are
    scaled in place: at D = 2048 each copy is 32 MB of memory traffic."""
    n, dim = resid.shape
    emp = resid.T @ resid
    emp /= n
    mu = np.trace(emp) / dim
    delta_ = float(np.dot(emp.ravel(), emp.ravel()))  # ||X'X||_F^2 / n^2
    beta_ = float(np.sum(np.sum(resid**2, axis=1) ** 2))  # sum of ||x_i||^4
    beta = (beta_ / n - delta_) / (dim * n)
    delta = (delta_ - 2.0 * mu * np.trace(emp) + dim * mu**2) / dim
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    emp *= 1.0 - shrinkage
    emp.flat[:: dim + 1] += shrinkage * mu
    return emp


def _shared_cholesky(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, D) and the lower Cholesky factor L of their shared, shrunk covariance
    (cov = L L'): the Mahalanobis distance of ``f`` to a mean ``m`` is ``||L^-1 (f - m)||``."""
    from scipy.linalg import cholesky

    features = np.asarray(features, dtype=np.float64)
    present = np.unique(labels)
    means = np.stack([features[labels == k].mean(axis=0) for k in present])
    cov = ledoit_wolf(features - means[np.searchsorted(present, labels)])
    cov.flat[:: cov.shape[0] + 1] += 1e-9 * np.trace(cov) / cov.shape[0]  # positive definite without shrinkage
    return cholesky(cov, lower=True, overwrite_a=True, check_finite=False), means


def fit_statistics(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means and one shared, shrunk covariance -> (transform (D, D), centres (K, D)), so
    that ``||f @ transform - centre||`` is the Mahalanobis distance of ``f`` to that class mean.
    The transform is L^-1' from LAPACK's triangular inverse (a third of the work of solving
    against the identity)."""
    from scipy.linalg import lapack

    lower, means = _shared_cholesky(features, labels)
    inverse, _ = lapack.dtrtri(lower, lower=1, overwrite_c=1)  # a Cholesky factor has a positive diagonal
    transform = inverse.T
    return transform, means @ transform


def score_features(transform: np.ndarray, centres: np.ndarray, features: np.ndarray) -> np.ndarray:
    scorer = MahalanobisScore(torch.from_numpy(transform), torch.from_numpy(centres))
    with torch.inference_mode():
        parts = [scorer(torch.from_numpy(features[i : i + 256])).double().numpy() for i in range(0, len(features), 256)]
    return np.concatenate(parts)


def _held_out_scores(fit: np.ndarray, fit_labels: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Scores of the ``held`` rows under statistics fitted on the ``fit`` rows: two triangular
    solves against the held rows and the class means instead of the full D x D transform."""
    from scipy.linalg import solve_triangular

    lower, means = _shared_cholesky(fit, fit_labels)
    z = solve_triangular(lower, np.asarray(held, dtype=np.float64).T, lower=True, check_finite=False)
    c = solve_triangular(lower, means.T, lower=True, check_finite=False)
    d2 = np.min([((z - c[:, [k]]) ** 2).sum(axis=0) for k in range(c.shape[1])], axis=0)
    return np.sqrt(d2)


def cross_fitted_scores(features: np.ndarray, labels: np.ndarray, groups: list[str], folds: int = FOLDS) -> np.ndarray:
    """Each image's score under statistics fitted without its duplicate group's fold."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(set(groups))
    if n_groups < 2:
        raise BrainMRIError(f"too few training images ({len(labels)}) to calibrate the input check")
    scores = np.empty(len(labels))
    for fit, held in GroupKFold(n_splits=min(folds, n_groups)).split(features, labels, groups):
        scores[held] = _held_out_scores(features[fit], labels[fit], features[held])
    return scores


# --- calibration on a run ------------------------------------------------------------------


def _training_side(run: Run):
    """The run's training images (train and val sides, never test) at the model's size."""
    from brainmri.data.prepared import load_split

    if run.folder is None and run.data is None:
        raise BrainMRIError(
            f"the prepared data of run {run.path} ({run.config.get('data') or 'not recorded'}) is not there; "
            "the input check is calibrated on the run's training images: pass --data PREPARED"
        )
    sides, groups, source = training_groups(run)
    images, labels = [], []
    for side in sides:
        x, y, _ = load_split(run.prepared, run.dir.split, side, fold=run.fold, size=int(run.card["image_size"]))
        images.append(x)
        labels.append(y.numpy())
    return torch.cat(images), np.concatenate(labels), groups, source


def training_groups(run: Run) -> tuple[list[str], list[str], dict[str, Any]]:
    """The sides the input check is calibrated on (train, and val where the run has one; never
    test), each image's duplicate group in that order, and the card's record of the source."""
    from brainmri.data.splitfile import select_split

    rows = run.split
    if rows is None:
        raise BrainMRIError(f"run {run.path} has no split.csv: its training side is unknown")
    fold = run.fold
    sides = ["train"] + (["val"] if fold is None and any(r["side"] == "val" for r in rows) else [])
    groups = [r.get("group") or r["path"] for side in sides for r in select_split(rows, side, fold)]
    source = {"prepared": str(run.prepared.path), "split": str(run.dir.split), "sides": sides, "fold": fold}
    return sides, groups, source


def calibrate_input_check(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    percentile: float = PERCENTILE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit the score's statistics on a finished run's training side, set its threshold, and
    record both beside ``checkpoints/best.pt`` (card entry ``input_check`` and the statistics,
    :mod:`brainmri.models.annex`), which stays as training wrote it; returns that entry.

    ``data`` replaces the run's recorded prepared folder (moved since training). A run that is
    calibrated already is refused unless ``overwrite``.
    """
    from brainmri.models.annex import write_annex
    from brainmri.models.checkpoint import read_checkpoint

    _check_percentile(percentile)
    ckpt_path = RunDir(run_dir).best
    if not ckpt_path.is_file():
        raise BrainMRIError(f"{run_dir} is not a finished run: {ckpt_path} not found")
    ckpt = read_checkpoint(ckpt_path)
    if ckpt["card"].get("input_check") and not overwrite:
        raise BrainMRIError(f"{run_dir} has a calibrated input check already; pass --overwrite to calibrate it again")
    entry, stats = fit_input_check(
        run_dir, ckpt, data=data, device=device, batch_size=batch_size, percentile=percentile
    )
    write_annex(ckpt_path, {"input_check": entry}, {STATS_KEY: stats})
    return entry


def fit_input_check(
    run_dir: str | Path,
    ckpt: dict[str, Any],
    *,
    data: str | Path | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    percentile: float = PERCENTILE,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input check of the run's model ``ckpt`` (as read from its ``best.pt``) fitted on the
    run's training side, read from its prepared folder: the card entry and the statistics
    (:data:`STATS_KEY` group), worded as :func:`calibrate_input_check` stores them, beside the
    checkpoint. Writes nothing. ``data`` replaces the run's recorded prepared folder."""
    from brainmri.inference.forward import probabilities_with
    from brainmri.models.checkpoint import model_from_checkpoint
    from brainmri.runtime import resolve_device

    _check_percentile(percentile)
    run = Run.read(run_dir, ckpt["card"]).with_data(data)
    images, labels, groups, source = _training_side(run)
    dev = resolve_device(device) if isinstance(device, str) else device
    model, _ = model_from_checkpoint(ckpt, run.dir.best, device=dev)
    _, features = probabilities_with(model, images, pooled_features, batch_size=batch_size, device=dev)
    stored = f"beside the checkpoint, in {run.dir.best.stem}.{STATS_KEY}.safetensors"
    return fit_statistics_of(features, images, labels, groups, source, percentile=percentile, stored=stored)


def fit_statistics_of(
    features: np.ndarray,
    images: torch.Tensor,
    labels: np.ndarray,
    groups: list[str],
    source: dict[str, Any],
    *,
    percentile: float = PERCENTILE,
    stored: str = _IN_CHECKPOINT,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input check fitted on a model's pooled ``features`` of the training side's
    ``images`` (uint8 (N, 1, H, W), as the model sees them) with their ``labels`` and duplicate
    ``groups``: the card entry and the statistics. Training calls it with the features of the
    forward pass that also fits the temperature (:mod:`brainmri.training.run`), so the kept model
    runs over its training images once; ``source`` and ``stored`` are the card's words on where
    the images came from and where the statistics are kept (by default in the checkpoint)."""
    _check_percentile(percentile)
    features = np.asarray(features, dtype=np.float64)
    if not np.isfinite(features).all():
        raise BrainMRIError("the model's pooled features are not all finite (did training diverge?)")
    scores = cross_fitted_scores(features, labels, groups)
    threshold = float(np.percentile(scores, percentile))
    transform, centres = fit_statistics(features, labels)
    dim, k = transform.shape[0], centres.shape[0]
    image_entry = calibrate_image_statistics(images, groups, percentile)
    entry = {
        "method": METHOD,
        "description": "Mahalanobis distance of the backbone's pooled features to the nearest class mean, "
        "shared covariance (Lee et al., 2018) with Ledoit-Wolf shrinkage; flagged above the threshold",
        "threshold": threshold,
        "percentile": percentile,
        "calibrated_on": {
            "images": int(len(labels)),
            **source,
            "scores": f"{min(FOLDS, len(set(groups)))}-fold cross-fitted by duplicate group",
        },
        "training_scores": {q: float(np.percentile(scores, p)) for q, p in (("median", 50), ("p99", 99))}
        | {"max": float(scores.max())},
        "statistics": f"{stored}: transform {dim}x{dim}, centres {k}x{dim}",
        "cheap_checks": {
            "min_side": MIN_SIDE,
            "min_std": MIN_STD,
            "min_grey_levels": MIN_LEVELS,
            "max_chroma": MAX_CHROMA,
        },
        "image_statistics": image_entry,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    stats = {
        "method": METHOD,
        "transform": torch.from_numpy(transform).float(),
        "centres": torch.from_numpy(centres).float(),
    }
    return entry, stats


def _check_percentile(percentile: float) -> None:
    if not 50.0 <= percentile < 100.0:
        raise BrainMRIError(f"--percentile must be in [50, 100), got {percentile}")


def calibrate_image_statistics(images: torch.Tensor, groups: list[str], percentile: float = PERCENTILE) -> dict:
    """The model-independent score (:mod:`brainmri.inference.image_stats`) fitted on the training side's
    slices (uint8 (N, 1, H, W), as the model sees them): one mean and shrunk covariance of their
    statistics, and the threshold at ``percentile`` of cross-fitted scores, as for the features.
    Returns the card entry ``input_check.image_statistics``."""
    from brainmri.inference.image_stats import ImageStatisticsScore, statistics

    stats = statistics(images.numpy())
    one_class = np.zeros(len(stats), dtype=np.int64)
    scores = cross_fitted_scores(stats, one_class, groups)
    transform, centre = fit_statistics(stats, one_class)
    score = ImageStatisticsScore(transform, centre[0], float(np.percentile(scores, percentile)))
    quantiles = {q: float(np.percentile(scores, p)) for q, p in (("median", 50), ("p99", 99))}
    return score.to_entry(
        description="Mahalanobis distance of the slice's own statistics (grey levels, dark background, the "
        "head's size, shape and place, texture) to the training side's; independent of the model",
        training_scores=quantiles | {"max": float(scores.max())},
    )


def pooled_features(features: torch.Tensor) -> torch.Tensor:
    """The ``extra`` that asks :func:`brainmri.inference.forward.probabilities_with` for the pooled
    features themselves, which the input check is fitted on."""
    return features


# --- using it ----------------------------------------------------------------------------------


@dataclass
class InputCheck:
    """What a loaded model checks. ``extra`` is what :func:`brainmri.inference.forward.probabilities_with`
    computes besides the probabilities: the score module (PyTorch), the graph output's name
    (ONNX), or None when only the cheap checks run; ``image`` the model-independent score of
    the slice's own statistics (None for a run calibrated before it existed); ``status`` says
    which, in words."""

    threshold: float | None
    extra: MahalanobisScore | str | None
    status: str
    image: ImageStatisticsScore | None = None

    @classmethod
    def cheap_only(cls, why: str) -> InputCheck:
        """The checks that need no fitted statistics (size, near-constant, colour); ``why``
        says, in words, why the others do not run."""
        return cls(None, None, f"{_CHEAP_ONLY} ({why})")

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> InputCheck:
        entry, stats = ckpt["card"].get("input_check"), ckpt.get(STATS_KEY)
        if not entry or not isinstance(stats, dict) or stats.get("method") != METHOD:
            return cls.cheap_only("the model is not calibrated: run 'brainmri calibrate RUN'")
        transform, centres = stats.get("transform"), stats.get("centres")
        head = ckpt.get("model_state", {}).get("head.1.weight")  # the head's first Linear: (hidden, D)
        width = head.shape[1] if isinstance(head, torch.Tensor) and head.ndim == 2 else None
        fits = (
            isinstance(transform, torch.Tensor)
            and isinstance(centres, torch.Tensor)
            and transform.ndim == 2
            and centres.ndim == 2
            and transform.shape[0] == transform.shape[1] == centres.shape[1]
            and width in (None, transform.shape[0])
        )
        if not fits:
            raise BrainMRIError(
                "damaged input-check statistics in the checkpoint (they do not fit the model); "
                "run 'brainmri calibrate RUN --overwrite'"
            )
        threshold = _threshold(entry)
        image = _image_score(entry)
        status = f"{_status(image)} (threshold {threshold:.1f})"
        score = MahalanobisScore(cast(torch.Tensor, transform), cast(torch.Tensor, centres))  # checked in `fits`
        return cls(threshold, score, status, image)

    @classmethod
    def for_onnx(cls, proto: Any, card: Mapping[str, Any]) -> InputCheck:
        entry = card.get("input_check") or {}
        if not entry or ONNX_OUTPUT not in {o.name for o in proto.graph.output}:
            return cls.cheap_only(f"this ONNX file has no '{ONNX_OUTPUT}' output: export a calibrated run")
        threshold = _threshold(entry)
        image = _image_score(entry)
        return cls(threshold, ONNX_OUTPUT, f"{_status(image)} (threshold {threshold:.1f}, in the ONNX graph)", image)

    def classify(
        self, model: Model, images: torch.Tensor, reasons: list[list[str]], **kwargs: Any
    ) -> tuple[np.ndarray, list[str | None], np.ndarray | None]:
        """Probabilities, each slice's warning (None: nothing to say) and scores (None without a score)."""
        from brainmri.inference.forward import probabilities, probabilities_with

        image_scores = self.image.scores(images) if self.image is not None else None
        if self.extra is None:
            proba = probabilities(model, images, **kwargs)
            return proba, self.warnings(reasons, None, image_scores), None
        proba, scores = probabilities_with(model, images, self.extra, **kwargs)
        return proba, self.warnings(reasons, scores, image_scores), scores

    def warnings(
        self, reasons: list[list[str]], scores: np.ndarray | None, image_scores: np.ndarray | None = None
    ) -> list[str | None]:
        out = []
        for i, why in enumerate(reasons):
            why = list(why)
            if image_scores is not None and self.image is not None and not image_scores[i] <= self.image.threshold:
                why.append(
                    f"image statistics unlike an MRI slice's (score {image_scores[i]:.1f} > {self.image.threshold:.1f})"
                )
            if scores is not None and self.threshold is not None and not scores[i] <= self.threshold:
                why.append(f"out of distribution (score {scores[i]:.1f} > {self.threshold:.1f})")
            out.append(warning_text(why))
        return out


def _threshold(entry: object) -> float:
    """The card's threshold, checked: a hand-edited NaN would flag every image, a negative one too."""
    value = entry.get("threshold") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise BrainMRIError(
            f"damaged model card: input_check.threshold is {value!r}; run 'brainmri calibrate RUN --overwrite'"
        )
    return float(value)


def _image_score(entry: dict[str, Any]) -> ImageStatisticsScore | None:
    """The card's model-independent score; None for a run calibrated before it existed."""
    from brainmri.inference.image_stats import ImageStatisticsScore

    image = entry.get("image_statistics")
    return None if image is None else ImageStatisticsScore.from_entry(image)


def _status(image: ImageStatisticsScore | None) -> str:
    if image is None:
        return f"{_FULL}; no image-statistics score (calibrated before it existed: 'brainmri calibrate RUN "
        "--overwrite')"
    return _FULL_WITH_IMAGE


_FULL = "size, near-constant, colour and out-of-distribution score (Mahalanobis)"
_FULL_WITH_IMAGE = "size, near-constant, colour, image statistics and out-of-distribution score (Mahalanobis)"
_CHEAP_ONLY = "size, near-constant and colour checks only"
