"""The paper's experiment: several architectures trained on the same data, split and
settings, evaluated and reported side by side (:func:`compare`), and the one-command
reproduction that fetches and prepares the data first (:func:`reproduce`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri import data as data_mod
from brainmri.config import TrainConfig
from brainmri.errors import BrainMRIError
from brainmri.evaluate import compute_metrics, evaluate_run, read_history, read_predictions
from brainmri.files import atomic_write_text
from brainmri.models import PAPER_ARCHS
from brainmri.report import FIGURES, fmt, make_figures, render_report
from brainmri.splits import split_level

#: The paper's Table 2, only the numbers we can vouch for (accuracy and training time);
#: its precision, sensitivity and F1 are reported as "not given".
PUBLISHED: dict[str, dict[str, float]] = {
    "resnet50": {"accuracy": 0.95, "training_seconds": 316.7},
    "resnet101": {"accuracy": 0.95, "training_seconds": 496.6},
    "resnet152": {"accuracy": 0.93, "training_seconds": 872.7},
}
PAPER_CITATION = "Kruszyk et al., 2024"

#: Presets of ``brainmri reproduce``. ``paper`` repeats the published settings; ``quick``
#: shrinks images, epochs and data so a CPU-only user sees a whole report in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"image_size": 256, "epochs": 10, "limit_per_class": None, "weights": "imagenet", "batch_size": 32},
    "quick": {"image_size": 64, "epochs": 3, "limit_per_class": 64, "weights": "imagenet", "batch_size": 32},
}

#: Size at which ``reproduce`` prepares data (the paper's); presets train at their own size.
PREPARE_SIZE = 256

COMPARISON_JSON = "comparison.json"
METRIC_COLUMNS = (
    "Validation accuracy",
    "Precision",
    "Sensitivity",
    "F1",
    "Avg. training loss",
    "Avg. validation loss",
    "Training time (s)",
)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- running the comparison ----------------------------------------------------------


def _run_is_evaluated(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    if not summary.is_file() or not (run_dir / "metrics.json").is_file():
        return False
    return bool(json.loads(summary.read_text(encoding="utf-8")).get("finished", True))


def _train_and_evaluate(
    config: TrainConfig, run_dir: Path, n_bootstrap: int, progress: bool, log: Log
) -> dict[str, Any]:
    """Train (or resume, or just evaluate) one run; finished and evaluated runs are skipped."""
    from brainmri.train import train

    label = f"{config.arch}" + (f" fold {config.fold}" if config.fold is not None else "")
    if _run_is_evaluated(run_dir):
        log(f"{label}: finished earlier, skipped ({run_dir})")
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if not (run_dir / "summary.json").is_file():
        if (run_dir / "checkpoints" / "last.pt").is_file():
            log(f"{label}: resuming interrupted training in {run_dir}")
            train(config, run_dir, resume=True, progress=progress)
        else:
            log(f"{label}: training into {run_dir}")
            train(config, run_dir, overwrite=run_dir.exists(), progress=progress)
    log(f"{label}: evaluating")
    metrics = evaluate_run(run_dir, n_bootstrap=n_bootstrap, seed=config.seed, device=config.device)
    log(
        f"{label}: accuracy {metrics['accuracy']:.3f} (95% CI {fmt(metrics['ci']['accuracy'][0])}-"
        f"{fmt(metrics['ci']['accuracy'][1])}), macro F1 {metrics['macro']['f1']:.3f}"
    )
    return metrics


def _settings(prepared: Path, config: TrainConfig, cv: int | None, test_size: float) -> dict[str, Any]:
    """What must stay the same for a comparison folder to be resumed."""
    shared = config.to_dict()
    for key in ("arch", "fold", "split", "data", "device", "workers", "tensorboard"):
        shared.pop(key, None)
    manifest = hashlib.sha256((prepared / data_mod.MANIFEST).read_bytes()).hexdigest()
    return {
        "prepared": str(prepared.resolve()),
        "prepared_manifest_sha256": manifest,  # the same folder re-prepared from other data is other data
        "cv": cv,
        "test_size": test_size,
        "config": shared,
    }


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a comparison under other settings; a comparison none of whose runs has
    started (say, the first try failed for want of weights) is simply started again."""
    path = out / COMPARISON_JSON
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    old.setdefault("prepared_manifest_sha256", settings["prepared_manifest_sha256"])  # older records
    for key, default in (("groups", None), ("groups_missing", "error")):  # records from before --groups
        old.get("config", {}).setdefault(key, default)
    if old != settings:
        if not any((out / "runs").glob("**/checkpoints/*.pt")):
            for stale in (path, out / "split.csv", *out.glob("folds_k*.csv")):
                stale.unlink(missing_ok=True)
            return
        if "val_size" not in old.get("config", {}):
            raise BrainMRIError(
                f"{out} was made by an older brainmri, whose runs chose their best epoch on the test side; "
                "start the comparison again in another --out folder, or delete it"
            )
        changed = sorted(
            k
            for k in {*old.get("config", {}), *settings["config"]}
            if old["config"].get(k) != settings["config"].get(k)
        ) + [
            k.replace("_manifest_sha256", " data")
            for k in ("prepared", "prepared_manifest_sha256", "cv", "test_size")
            if old.get(k) != settings.get(k)
        ]
        raise BrainMRIError(
            f"{out} holds a comparison with other settings ({', '.join(changed) or 'settings differ'}); "
            "use another --out folder, or delete it to start again"
        )


def compare(
    prepared: str | Path,
    out: str | Path,
    config: TrainConfig,
    archs: Sequence[str] = PAPER_ARCHS,
    cv: int | None = None,
    n_bootstrap: int = 1000,
    progress: bool = True,
    log: Log = print,
    meta: dict[str, Any] | None = None,
    externals: Sequence[str | Path] = (),
) -> Path:
    """Train and evaluate ``archs`` on one prepared folder with one split and one config,
    then write ``report.md`` and ``report.html`` into ``out``; returns the HTML report.

    Runs live in ``out/runs/<arch>/`` (``out/runs/<arch>/fold<k>/`` with ``cv``). Rerunning
    the same command resumes: evaluated runs are skipped, interrupted ones resumed.
    """
    prepared, out = Path(prepared), Path(out)
    if not (prepared / data_mod.PREPARE_JSON).is_file():
        raise BrainMRIError(
            f"{prepared} is not a finished prepared folder (no {data_mod.PREPARE_JSON}); run prepare first"
        )
    archs = list(dict.fromkeys(archs))
    if not archs:
        raise BrainMRIError("no architectures to compare")
    from brainmri.models import available_archs

    unknown = [a for a in archs if a not in available_archs()]
    if unknown:
        raise BrainMRIError(f"unknown architecture(s) {', '.join(unknown)}; e.g. {', '.join(PAPER_ARCHS)}")
    if cv is not None and cv < 2:
        raise BrainMRIError(f"--cv must be at least 2, got {cv}")
    from brainmri.train import validate_config

    validate_config(config.replace(data=str(prepared)))  # before the settings are recorded in OUT
    settings = _settings(prepared, config, cv, config.test_size)
    _check_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)

    # One split for every architecture, made once and kept in the comparison folder.
    split = out / (f"folds_k{cv}.csv" if cv else "split.csv")
    if not split.is_file():
        grouping = {"groups": config.groups, "groups_missing": config.groups_missing}
        rows = (
            data_mod.make_kfold(prepared, cv, config.seed, **grouping)
            if cv
            else data_mod.make_split(prepared, config.test_size, config.seed, **grouping)
        )
        data_mod.write_split(rows, split)
    record = {"settings": settings, "archs": archs, "split": split.name, "meta": meta or {}}
    atomic_write_text(out / COMPARISON_JSON, json.dumps(record, indent=2) + "\n")

    base = config.replace(data=str(prepared.resolve()), split=str(split.resolve()))
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for arch in archs:
        if cv:
            folds = []
            for k in range(cv):
                run_dir = out / "runs" / arch / f"fold{k}"
                folds.append(_train_and_evaluate(base.replace(arch=arch, fold=k), run_dir, n_bootstrap, progress, log))
            results[arch] = {"folds": folds, "pooled": _pool_folds(out / "runs" / arch, cv, n_bootstrap, base.seed)}
        else:
            results[arch] = {
                "metrics": _train_and_evaluate(base.replace(arch=arch), out / "runs" / arch, n_bootstrap, progress, log)
            }
    log(f"all runs done in {time.perf_counter() - started:.0f} s")
    _, html_path = write_comparison_report(out, results, cv=cv, meta=meta or {})
    return html_path


def _pool_folds(arch_dir: Path, cv: int, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Metrics and figures over the out-of-fold predictions of all folds (each image once)."""
    ys, probs, histories = [], [], []
    classes: list[str] = []
    for k in range(cv):
        y, p, _, classes = read_predictions(arch_dir / f"fold{k}" / "predictions.csv")
        ys.append(y)
        probs.append(p)
        histories.append(read_history(arch_dir / f"fold{k}"))
    y_true, proba = np.concatenate(ys), np.concatenate(probs)
    metrics = compute_metrics(y_true, proba, classes, n_bootstrap=n_bootstrap, seed=seed)
    epochs = min(len(h) for h in histories)
    mean_history = [
        {
            key: float(np.mean([h[i][key] for h in histories]))
            for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
        }
        for i in range(epochs)
    ]
    figs = make_figures(
        arch_dir / "pooled", metrics, y_true, proba, mean_history, title=f"{arch_dir.name}, {cv} folds pooled"
    )
    metrics["figures"] = {k: str(v) for k, v in figs.items()}
    atomic_write_text(arch_dir / "pooled" / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


# --- the report ----------------------------------------------------------------------


def _row_values(m: dict[str, Any]) -> list[float | None]:
    run = m.get("run", {})
    return [
        m["accuracy"],
        m["macro"]["precision"],
        m["macro"]["recall"],
        m["macro"]["f1"],
        run.get("avg_train_loss"),
        run.get("avg_val_loss"),
        run.get("training_seconds"),
    ]


def _mean_std(values: Sequence[float | None], digits: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0.0:.{digits}f}"


def _ci(m: dict[str, Any], key: str) -> str:
    ci = m["ci"].get(key)
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def _pretty(arch: str) -> str:
    return arch.replace("resnet", "ResNet-") if arch.startswith("resnet") else arch


def _environment(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "environment.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _device_text(env: dict[str, Any]) -> str:
    parts = [str(env.get(k)) for k in ("device", "device_name", "precision") if env.get(k)]
    return ", ".join(parts) if parts else "unknown"


def _split_counts(split: Path, fold: int | None = None) -> dict[str, dict[str, int]]:
    rows = data_mod.read_split(split)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        side = r.get("side") or ("test" if fold is not None and int(r["fold"]) == fold else "train")
        counts.setdefault(side, {}).setdefault(r["label"], 0)
        counts[side][r["label"]] += 1
    return counts


def write_comparison_report(
    out: Path, results: dict[str, dict[str, Any]], cv: int | None, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """The paper's Table 2 layout (one row per architecture), statistics, figures and limits."""
    archs = list(results)
    first_run = out / "runs" / archs[0] / ("fold0" if cv else "")
    config = json.loads((first_run / "config.json").read_text(encoding="utf-8"))
    env = _environment(first_run)
    prepare_info = json.loads((Path(config["data"]) / data_mod.PREPARE_JSON).read_text(encoding="utf-8"))
    weights = config.get("weights", "?")
    preset = meta.get("preset") or "custom (brainmri compare)"

    header = ["Model", *METRIC_COLUMNS, "Paper accuracy", "Paper time (s)"]
    rows, stats_rows = [], []
    for arch in archs:
        res = results[arch]
        pub = PUBLISHED.get(arch, {})
        published = [fmt(pub.get("accuracy"), 2), fmt(pub.get("training_seconds"), 1)]
        if cv:
            folds = res["folds"]
            columns = list(zip(*[_row_values(m) for m in folds], strict=True))
            cells = [_mean_std(c, 1 if i == 6 else 3) for i, c in enumerate(columns)]
            pooled = res["pooled"]
            stats_rows.append(
                [
                    _pretty(arch),
                    str(pooled["n"]),
                    _ci(pooled, "accuracy"),
                    _ci(pooled, "macro_f1"),
                    _mean_std([m["roc_auc_macro"] for m in folds], 3),
                    _mean_std([m["ece"] for m in folds], 3),
                ]
            )
        else:
            m = res["metrics"]
            cells = [fmt(v, 1 if i == 6 else 3) for i, v in enumerate(_row_values(m))]
            stats_rows.append(
                [
                    _pretty(arch),
                    str(m["n"]),
                    _ci(m, "accuracy"),
                    _ci(m, "macro_f1"),
                    fmt(m["roc_auc_macro"]),
                    fmt(m["ece"]),
                ]
            )
        rows.append([_pretty(arch), *cells, *published])

    counts = _split_counts(first_run / "split.csv") if not cv else None
    split_by = split_level(TrainConfig.from_dict(config), data_mod.read_split(first_run / "split.csv"))
    group_file = config.get("groups") or "the groups file given to prepare"
    level = "95%"
    sections: list[dict[str, Any]] = [
        {
            "heading": "Not for clinical use",
            "notice": True,
            "text": [
                "Research software, not a medical device: these models are not validated for clinical "
                "diagnosis and must not be used to make or support clinical decisions."
            ],
        },
        {
            "heading": "Results",
            "text": [
                (
                    f"Mean ± standard deviation over {cv} folds of stratified group k-fold cross-validation. "
                    if cv
                    else "Held-out test split, the same for every architecture. "
                )
                + "Precision, sensitivity (recall) and F1 are macro averages over the four classes; losses "
                "are cross-entropy averaged over epochs; training time is wall-clock time of the whole run "
                f"on this machine ({_device_text(env)}). The paper's values ({PAPER_CITATION}, Table 2) are "
                "given beside ours for accuracy and training time only; its precision, sensitivity and F1 "
                "are not given here. Training times are not comparable across machines.",
            ],
            "table": (header, rows),
        },
        {
            "heading": "Uncertainty and calibration",
            "text": [
                f"{level} percentile bootstrap confidence intervals ({meta.get('n_bootstrap', 1000)} resamples of "
                "the test images) for accuracy and macro F1"
                + (" over the pooled out-of-fold predictions" if cv else "")
                + "; one-vs-rest ROC-AUC (macro mean) and expected calibration error (ECE, 15 bins). "
                "Architectures whose intervals overlap widely cannot be ranked on this test set."
            ],
            "table": (
                ["Model", "Test images", f"Accuracy {level} CI", f"Macro F1 {level} CI", "ROC-AUC (macro)", "ECE"],
                stats_rows,
            ),
        },
        {
            "heading": "Settings",
            "bullets": [
                f"Preset: {preset}",
                f"Weights: {weights}"
                + (" (ImageNet-pretrained, fine-tuned)" if weights == "imagenet" else "")
                + (" (random initialisation, trained from scratch)" if weights == "none" else ""),
                f"Architectures: {', '.join(archs)}",
                f"Image size: {config['image_size']} x {config['image_size']} px, grayscale",
                f"Epochs: {config['epochs']}, batch size {config['batch_size']}, Adam lr {config['lr']}, "
                f"fine-tuning {config.get('finetune', 'full')}, "
                f"augmentation {'on' if config.get('augment') else 'off'}, "
                f"class balance {config.get('balance')}",
                f"Data: {meta.get('source') or prepare_info.get('settings', {}).get('source', '?')}; prepared "
                f"{_counts_text(prepare_info)}",
                (
                    f"Split: stratified group {cv}-fold (seed {config['seed']})"
                    if cv
                    else f"Split: {config.get('test_size', 0.2):.0%} held out, stratified by class, duplicate "
                    f"groups kept on one side (seed {config['seed']}); train {_side_text(counts, 'train')}; "
                    + (f"validation {_side_text(counts, 'val')}; " if counts and "val" in counts else "")
                    + f"test {_side_text(counts, 'test')}"
                )
                + (
                    f"; at most {config['limit_per_class']} images per class and side"
                    if config.get("limit_per_class")
                    else ""
                ),
                (
                    f"Model evaluated: the best epoch by accuracy on a validation side of "
                    f"{config['val_size']:.0%} of the training images (whole duplicate groups); the test side "
                    "chose nothing"
                    if config.get("val_size")
                    else "Model evaluated: the last epoch, as in the paper; the test side chose nothing (the "
                    "validation curves are drawn on it, but no epoch is selected by them)"
                ),
                f"Split level: {split_by} ("
                + {
                    "patient": f"every group of {group_file} and every duplicate group on one side",
                    "duplicate group": "every duplicate group on one side; no patient groups given",
                    "image": "image by image: copies of one image can sit on both sides",
                }[split_by]
                + ")",
                f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores; device {_device_text(env)}; "
                f"torch {env.get('torch', '?')}",
            ],
        },
        {
            "heading": "What this run cannot claim",
            "bullets": [
                (
                    f"Images are split by the groups of {group_file} (e.g. patients); the split is only as "
                    "disjoint as those groups are complete and correct."
                    if split_by == "patient"
                    else "Images are not split by patient: the dataset has no patient identifiers, so slices of "
                    "one patient can appear in both training and test data and inflate the scores."
                ),
                "Exact duplicates were removed and near-duplicates grouped by perceptual hash, but some "
                "near-duplicates may remain across the split.",
                "A single public dataset (Sartaj Bhuvaji et al., Kaggle) from unknown scanners and "
                "protocols; nothing here shows that the models work on other data.",
                f"Weights used: {weights}. "
                + {
                    "imagenet": "ImageNet pretraining (natural photographs), fine-tuned on this dataset only.",
                    "none": "Trained from scratch (no pretraining), unlike the paper, which fine-tuned "
                    "ImageNet weights; scores are not comparable with the published ones.",
                }.get(weights, "Weights from a local file; their provenance is the user's to vouch for."),
                "Not for clinical diagnosis.",
            ]
            + (
                [
                    f"This is the '{preset}' preset: small images, few epochs and a subset of the data. Its "
                    "numbers show that the pipeline works, not what the architectures can reach."
                ]
                if meta.get("preset") == "quick"
                else []
            )
            + _paper_comparability(config, cv, prepare_info),
        },
    ]
    for arch in archs:
        res = results[arch]
        m = res["pooled"] if cv else res["metrics"]
        fig_dir = out / "runs" / arch / ("pooled" if cv else "figures")
        per_class_rows = [
            [
                c,
                fmt(m["per_class"][c]["precision"]),
                fmt(m["per_class"][c]["recall"]),
                fmt(m["per_class"][c]["specificity"]),
                fmt(m["per_class"][c]["f1"]),
                fmt(m["per_class"][c]["roc_auc"]),
                str(m["per_class"][c]["support"]),
            ]
            for c in m["classes"]
        ]
        sections.append(
            {
                "heading": f"{_pretty(arch)}" + (f" ({cv} folds pooled)" if cv else ""),
                "level": 3,
                "table": (
                    ["Class", "Precision", "Sensitivity", "Specificity", "F1", "ROC-AUC", "Test images"],
                    per_class_rows,
                ),
                "figures": [
                    (f"{_pretty(arch)}: {name.removesuffix('.png').replace('_', ' ')}", fig_dir / name)
                    for name in FIGURES
                    if (fig_dir / name).is_file()
                ],
            }
        )
    title = (
        f"brainmri: ResNet comparison ({preset} preset)" if meta.get("preset") else "brainmri: architecture comparison"
    )
    return render_report(out, sections, title=title)


#: The paper's training settings, for saying where a run departs from them.
PAPER_SETTINGS = {
    "image_size": 256,
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-4,
    "weights": "imagenet",
    "finetune": "full",
    "augment": True,
    "limit_per_class": None,
}
PAPER_IMAGES = 3096


def _paper_comparability(config: dict[str, Any], cv: int | None, prepare_info: dict[str, Any]) -> list[str]:
    """Why the 'Paper accuracy' column is not a like-for-like comparison: the settings in which
    this run departs from the paper, and the paper's own data, which kept duplicates."""
    changed = [
        f"{key.replace('_', ' ')} {config.get(key)} (paper: {'none' if value is None else value})"
        for key, value in PAPER_SETTINGS.items()
        if config.get(key) != value
    ]
    if cv:
        changed.append(f"{cv}-fold cross-validation (paper: one 80/20 split)")
    bullets = []
    if changed:
        bullets.append(
            "Settings differ from the paper's: "
            + "; ".join(changed)
            + ". The 'Paper accuracy' and 'Paper time' columns are shown for orientation, not as a "
            "like-for-like comparison."
        )
    kept = prepare_info.get("kept")
    bullets.append(
        f"The paper's accuracies come from {PAPER_IMAGES:,} images of the public dataset's 3,264. Removing "
        "exact pixel duplicates alone leaves 2,870, so the paper's set kept at least 226 exact duplicates, "
        "which a random split can put on both sides and so inflate its test scores. "
        + (f"Ours are measured on {kept:,} images with duplicates removed" if kept else "Ours are measured on data")
        + " and duplicate groups kept on one side of the split; lower numbers here need not mean a worse model."
    )
    return bullets


def _counts_text(info: dict[str, Any]) -> str:
    """One line from prepare.json: files read, images kept per class, what was removed."""
    after = info.get("after") or {}
    removed = {k: v for k, v in (info.get("removed") or {}).items() if v}
    text = f"{info.get('files', '?')} files, {info.get('kept', '?')} kept"
    if after:
        text += " (" + ", ".join(f"{k} {v}" for k, v in after.items()) + ")"
    if removed:
        text += "; removed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in removed.items())
    return text


def _side_text(counts: dict[str, dict[str, int]] | None, side: str) -> str:
    if not counts or side not in counts:
        return "?"
    c = counts[side]
    return f"{sum(c.values())} images (" + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + ")"


# --- reproduce -----------------------------------------------------------------------


def _prepared_matches(prepared: Path, source: Path, size: int) -> bool:
    info_path = prepared / data_mod.PREPARE_JSON
    if not info_path.is_file():
        return False
    settings = json.loads(info_path.read_text(encoding="utf-8")).get("settings", {})
    return settings.get("source") == str(source.resolve()) and int(settings.get("size", -1)) == size


def reproduce(
    data: str | Path | None = None,
    preset: str = "paper",
    out: str | Path = "reproduce",
    archs: Sequence[str] | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    limit_per_class: int | None = None,
    batch_size: int | None = None,
    cv: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    n_bootstrap: int = 1000,
    progress: bool = True,
    log: Log = print,
) -> Path:
    """Fetch (or use ``data``), prepare, and compare with a preset's settings; returns the
    HTML report. Data are always prepared as the paper did (256 px), so duplicate detection
    does not depend on the preset; training resizes from there. ``out/prepared-256/`` is
    reused when it was made from the same source; the comparison lives in ``out/<preset>/``
    and resumes when rerun."""
    from brainmri.fetch import ensure_dataset

    if preset not in PRESETS:
        raise BrainMRIError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset])
    overrides = {
        "weights": weights,
        "epochs": epochs,
        "image_size": image_size,
        "limit_per_class": limit_per_class,
        "batch_size": batch_size,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    out = Path(out)
    started = time.perf_counter()
    source = ensure_dataset(data)
    size = int(settings["image_size"])
    prepared = out / f"prepared-{PREPARE_SIZE}"
    if _prepared_matches(prepared, source, PREPARE_SIZE):
        log(f"using prepared data in {prepared}")
    else:
        log(f"preparing {source} at {PREPARE_SIZE} px into {prepared}")
        data_mod.prepare(source, prepared, size=PREPARE_SIZE, overwrite=prepared.exists(), progress=progress)
    config = TrainConfig(
        data=str(prepared.resolve()),
        weights=settings["weights"],
        epochs=int(settings["epochs"]),
        image_size=size,
        batch_size=int(settings["batch_size"]),
        limit_per_class=settings["limit_per_class"],
        device=device,
    )
    if seed is not None:
        config = config.replace(seed=seed)
    meta = {"preset": preset, "source": str(source), "n_bootstrap": n_bootstrap}
    report = compare(
        prepared,
        out / preset,
        config,
        archs=archs or PAPER_ARCHS,
        cv=cv,
        n_bootstrap=n_bootstrap,
        progress=progress,
        log=log,
        meta=meta,
    )
    log(f"reproduce finished in {time.perf_counter() - started:.0f} s")
    return report
