"""The comparison report: the paper's Table 2 layout (one row per architecture), the
statistics it lacked, external validation, the failure gallery, the settings and what the
run cannot claim, as ``report.md`` and a self-contained ``report.html``.

It reads only what the runs wrote (config, summary, metrics, figures), so it can be
rebuilt without a model. :mod:`brainmri.experiments.compare` runs the comparison and calls
:func:`write_comparison_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.config import TrainConfig
from brainmri.data import prepared as data_mod
from brainmri.data import splitfile
from brainmri.data.splits import split_level
from brainmri.files import read_json
from brainmri.labels import CLASSES
from brainmri.provenance import code_version, describe
from brainmri.render.document import fmt, render_report
from brainmri.render.figures import FIGURES
from brainmri.reports.checklist.tables import checklist_sections
from brainmri.reports.paper import PAPER_CITATION, PUBLISHED, paper_comparability
from brainmri.reports.repeats import pair_sections, repeats_sections
from brainmri.rundir import RunDir
from brainmri.training.records import recipe_text

METRIC_COLUMNS = (
    "Test accuracy",
    "Precision",
    "Sensitivity",
    "F1",
    "Avg. training loss",
    "Avg. validation loss (val side)",
    "Training time (s)",
)
LEVEL = "95%"


def pretty(arch: str) -> str:
    return arch.replace("resnet", "ResNet-") if arch.startswith("resnet") else arch


def ci_text(m: dict[str, Any], key: str) -> str:
    ci = m["ci"].get(key)
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


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


def device_text(env: dict[str, Any]) -> str:
    parts = [str(env.get(k)) for k in ("hardware", "device", "precision") if env.get(k)]
    return ", ".join(parts) if parts else "unknown"


def split_counts(split: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in splitfile.read_split(split):
        side = r.get("side") or "train"
        counts.setdefault(side, {}).setdefault(r["label"], 0)
        counts[side][r["label"]] += 1
    return counts


def _side_text(counts: dict[str, dict[str, int]] | None, side: str) -> str:
    if not counts or side not in counts:
        return "?"
    c = counts[side]
    return f"{sum(c.values())} images (" + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + ")"


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


# --- sections --------------------------------------------------------------------------------


def _results_sections(results: dict[str, dict[str, Any]], cv: int | None, env: dict[str, Any]) -> list[dict]:
    header = ["Model", *METRIC_COLUMNS, "Paper accuracy", "Paper time (s)"]
    rows, stats_rows = [], []
    for arch, res in results.items():
        pub = PUBLISHED.get(arch, {})
        published = [fmt(pub.get("accuracy"), 2), fmt(pub.get("training_seconds"), 1)]
        if cv:
            folds, pooled = res["folds"], res["pooled"]
            columns = list(zip(*[_row_values(m) for m in folds], strict=True))
            cells = [_mean_std(c, 1 if i == 6 else 3) for i, c in enumerate(columns)]
            auc, ece = _mean_std([m["roc_auc_macro"] for m in folds], 3), _mean_std([m["ece"] for m in folds], 3)
            m = pooled
        else:
            m = res["metrics"]
            cells = [fmt(v, 1 if i == 6 else 3) for i, v in enumerate(_row_values(m))]
            auc, ece = fmt(m["roc_auc_macro"]), fmt(m["ece"])
        stats_rows.append([pretty(arch), str(m["n"]), ci_text(m, "accuracy"), ci_text(m, "macro_f1"), auc, ece])
        rows.append([pretty(arch), *cells, *published])
    where = (
        f"Mean ± standard deviation over {cv} folds of stratified group k-fold cross-validation. "
        if cv
        else "Held-out test split, the same for every architecture. "
    )
    return [
        {
            "heading": "Results",
            "text": [
                where + "Accuracy, precision, sensitivity (recall) and F1 are on the test side, macro averages "
                "over the four classes; losses are cross-entropy averaged over the epochs (validation loss on the "
                "validation side carved from training, never the test side); training time is wall-clock time of the "
                f"whole run on this machine ({device_text(env)}). The paper's values ({PAPER_CITATION}, Table 2) "
                "are given beside ours for accuracy and training time only; its precision, sensitivity and F1 "
                "are not given here. Training times are not comparable across machines."
            ],
            "table": (header, rows),
        },
        {
            "heading": "Uncertainty and calibration",
            "text": [
                f"{LEVEL} percentile bootstrap confidence intervals (resamples of the test images) for accuracy "
                "and macro F1" + (" over the pooled out-of-fold predictions" if cv else "") + "; one-vs-rest "
                "ROC-AUC (macro mean) and expected calibration error (ECE, 15 bins). Architectures whose "
                "intervals overlap widely cannot be ranked on this test set."
            ],
            "table": (
                ["Model", "Test images", f"Accuracy {LEVEL} CI", f"Macro F1 {LEVEL} CI", "ROC-AUC (macro)", "ECE"],
                stats_rows,
            ),
        },
    ]


def external_sections(out: Path, results: dict[str, dict[str, Any]]) -> list[dict]:
    """One section per external folder: accuracy and macro F1 with CIs, per-class
    sensitivity, overlap with the training data, confusion matrices."""
    names = list(dict.fromkeys(n for res in results.values() for n in res.get("external", {})))
    sections = []
    for name in names:
        rows, figures, notes = [], [], []
        for arch, res in results.items():
            m = res.get("external", {}).get(name)
            if m is None:
                continue
            sens = [fmt(m["per_class"][c]["recall"]) for c in CLASSES]
            overlap = m["source"].get("training_overlap") or []
            rows.append(
                [
                    pretty(arch),
                    str(m["n"]),
                    f"{m['accuracy']:.3f} ({ci_text(m, 'accuracy')})",
                    f"{m['macro']['f1']:.3f} ({ci_text(m, 'macro_f1')})",
                    *sens,
                    str(len(overlap)),
                ]
            )
            fig = Path(m["figures"]["confusion_matrix.png"]) if m.get("figures") else None
            if fig is not None and fig.is_file():
                figures.append((f"{pretty(arch)} on {name}: confusion matrix", fig))
            notes.append(m["source"].get("overlap_check", "done"))
        path = next(
            iter(r["external"][name]["source"]["path"] for r in results.values() if name in r.get("external", {}))
        )
        text = [
            f"Every model evaluated on {path}, a folder from other sources that no model was trained or tuned "
            f"on. Images that duplicate a run's training data (the same exact and perceptual-hash check as "
            f"'brainmri evaluate --data') are left out and counted in the last column. Accuracy and macro F1 "
            f"with {LEVEL} bootstrap CIs; sensitivity (recall) per class."
        ]
        if any(n != "done" for n in notes):
            text.append("Overlap check: " + "; ".join(sorted(set(notes))))
        header = ["Model", "Images", f"Accuracy ({LEVEL} CI)", f"Macro F1 ({LEVEL} CI)"]
        header += [f"Sensitivity {c.removesuffix('_tumor')}" for c in CLASSES] + ["Left out (training copies)"]
        sections.append(
            {"heading": f"External validation: {name}", "text": text, "table": (header, rows), "figures": figures}
        )
    return sections


def _per_arch_sections(out: Path, results: dict[str, dict[str, Any]], cv: int | None) -> list[dict]:
    sections = []
    for arch, res in results.items():
        m = res["pooled"] if cv else res["metrics"]
        own = Path(res["path"]) if res.get("path") else None
        fig_dir = own / "figures" if own else out / "runs" / arch / ("pooled" if cv else "figures")
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
        figures = [
            (f"{pretty(arch)}: {name.removesuffix('.png').replace('_', ' ')}", fig_dir / name)
            for name in FIGURES
            if (fig_dir / name).is_file()
        ]
        sections.append(
            {
                "heading": f"{pretty(arch)}"
                + (f" ({cv} folds pooled)" if cv else "")
                + (f" (the run of seed {res['seed']})" if "seed" in res else ""),
                "level": 3,
                "table": (
                    ["Class", "Precision", "Sensitivity", "Specificity", "F1", "ROC-AUC", "Test images"],
                    per_class_rows,
                ),
                "figures": figures,
            }
        )
    return sections


def localisation_sections(out: Path, results: dict[str, dict[str, Any]]) -> list[dict]:
    """Where each model looks on the external folders' boxed tumour slices (evaluate --boxes)."""
    rows = []
    for arch, res in results.items():
        for name, m in res.get("external", {}).items():
            loc = m.get("localisation")
            if not loc:
                continue
            pg, en = loc["pointing_game_report_half"], loc["energy_report_half"]
            rows.append([pretty(arch), name, loc["chosen"], f"{pg['mean']:.3f} ({pg['low']:.3f}–{pg['high']:.3f})",
                         f"{en['mean']:.3f} ({en['low']:.3f}–{en['high']:.3f})"])  # fmt: skip
    if not rows:
        return []
    return [
        {
            "heading": "Where the models look",
            "text": [
                "Explanation maps scored against the tumour boxes of the external folder: the method chosen on the "
                "boxes' select half, and its score on the report half (pointing game: the map's maximum inside the "
                "box grown by 10%; energy: the map's positive mass inside the box; 95% bootstrap CIs). Each run's "
                "eval/<folder>/localisation/localisation.md has every method, the baselines (centre prior, uniform "
                "map), the occlusion test and the worst misses."
            ],
            "table": (["Model", "Folder", "Chosen method", "Pointing game (report half)", "Energy in box"], rows),
        }
    ]


def gallery_sections(results: dict[str, dict[str, Any]]) -> list[dict]:
    sections = []
    for arch, res in results.items():
        g = res.get("gallery")
        if not g:
            continue
        text = [
            f"{g['misclassified']} of {res['metrics']['n']} held-out images misclassified by {pretty(arch)}; "
            + (f"the grid shows the {g['shown']} most confident mistakes; " if g["shown"] < g["misclassified"] else "")
            + f"each tile is the Grad-CAM overlay of the predicted class, captioned with the true label, the "
            f"prediction and its probability. The full list is {Path(g['csv']).name} beside the figure."
        ]
        figures = [(f"{pretty(arch)}: misclassified held-out images", Path(g["figure"]))] if g.get("figure") else []
        sections.append({"heading": f"Failure gallery: {pretty(arch)}", "level": 3, "text": text, "figures": figures})
    return sections


def _split_bullet(config: dict[str, Any], counts, cv: int | None, leakage: dict[str, Any] | None) -> str:
    if cv:
        return f"Split: stratified group {cv}-fold (seed {config['seed']})"
    if config.get("split_policy") == "random":
        how = (
            f"{config.get('test_size', 0.2):.0%} held out, stratified by class, image by image over every readable "
            "file with duplicates kept (the paper's way, for the leakage study)"
        )
        if leakage:
            how += (
                f": {leakage['crossing_groups']} duplicate groups have members on both sides, and "
                f"{leakage['test_images_with_training_copy']} test images have a copy in training"
            )
    else:
        how = f"{config.get('test_size', 0.2):.0%} held out, stratified by class, duplicate groups kept on one side"
    text = f"Split: {how} (seed {config['seed']}); train {_side_text(counts, 'train')}; "
    if counts and "val" in counts:
        text += f"validation {_side_text(counts, 'val')}; "
    text += f"test {_side_text(counts, 'test')}"
    if config.get("limit_per_class"):
        text += f"; at most {config['limit_per_class']} images per class and side"
    return text


def _split_level_bullet(split_by: str, group_file: str) -> str:
    how = {
        "patient": f"every group of {group_file} and every duplicate group on one side",
        "duplicate group": "every duplicate group on one side; no patient groups given",
        "image": "image by image: copies of one image can sit on both sides",
    }[split_by]
    return f"Split level: {split_by} ({how})"


def _settings_section(config, env, archs, cv, counts, meta, prepare_info, leakage, split_by) -> dict:
    weights = config.get("weights", "?")
    group_file = config.get("groups") or "the groups file given to prepare"
    return {
        "heading": "Settings",
        "bullets": [
            f"Preset: {meta.get('preset') or 'custom (brainmri compare)'}",
            f"Weights: {weights}"
            + (" (ImageNet-pretrained, fine-tuned)" if weights == "imagenet" else "")
            + (" (random initialisation, trained from scratch)" if weights == "none" else ""),
            f"Architectures: {', '.join(archs)}",
            f"Image size: {config['image_size']} x {config['image_size']} px, grayscale",
            f"Epochs: {config['epochs']}, batch size {config['batch_size']}, "
            f"{recipe_text(TrainConfig.from_dict(config))}, "
            f"fine-tuning {config.get('finetune', 'full')}, augmentation {'on' if config.get('augment') else 'off'}, "
            f"class balance {config.get('balance')}",
            f"Data: {meta.get('source') or prepare_info.get('settings', {}).get('source', '?')}; prepared "
            f"{_counts_text(prepare_info)}",
            _split_bullet(config, counts, cv, leakage),
            _split_level_bullet(split_by, group_file),
            (
                f"Model evaluated: the best epoch by accuracy on a validation side of {config['val_size']:.0%} of "
                "the training images (whole duplicate groups); the test side chose nothing"
                if config.get("val_size")
                else "Model evaluated: the last epoch; no validation side (the curves show training only) and the "
                "test side chose nothing"
            ),
            "Inference: fp32"
            + (", probabilities averaged with the mirror image" if config.get("tta") else "")
            + f"; training precision {env.get('precision', '?')}",
            f"Code: the runs were made from {describe(env.get('code'))}; this report was written from "
            f"{describe(code_version())}",
            f"Command: {' '.join(env.get('command') or []) or 'not recorded'}",
            f"Machine: {env.get('platform', '?')}, {env.get('cpu_count', '?')} CPU cores, "
            f"{env.get('torch_threads', '?')} threads; {device_text(env)}; torch {env.get('torch', '?')}",
        ],
    }


def _limits_section(config, cv, meta, prepare_info, split_by) -> dict:
    weights = config.get("weights", "?")
    group_file = config.get("groups") or "the groups file given to prepare"
    bullets = [
        f"Images are split by the groups of {group_file} (e.g. patients); the split is only as disjoint as "
        "those groups are complete and correct."
        if split_by == "patient"
        else "Images are not split by patient: the dataset has no patient identifiers, so slices of one "
        "patient can appear in both training and test data and inflate the scores.",
        "Exact duplicates were removed and near-duplicates grouped by perceptual hash, but some "
        "near-duplicates may remain across the split.",
        "Training data from one public dataset (Sartaj Bhuvaji et al.) of unknown scanners and protocols; "
        "external folders, where given, test other sources, not other hospitals' routine data.",
        f"Weights used: {weights}. "
        + {
            "imagenet": "ImageNet pretraining (natural photographs), fine-tuned on this dataset only.",
            "none": "Trained from scratch (no pretraining), unlike the paper, which fine-tuned "
            "ImageNet weights; scores are not comparable with the published ones.",
        }.get(weights, "Weights from a local file; their provenance is the user's to vouch for."),
        "Not for clinical diagnosis.",
    ]
    if meta.get("preset") == "quick":
        bullets.append(
            "This is the 'quick' preset (the CI smoke run): small images, few epochs and a subset of the data. "
            "Its numbers show that the pipeline works and learns, not what the architectures can reach."
        )
    return {"heading": "What this run cannot claim", "bullets": bullets + paper_comparability(config, cv, prepare_info)}


def external_clusters(out: Path) -> dict[str, dict[str, str]]:
    """external name -> image -> near-duplicate group, from ``external-groups-<name>.csv``."""
    from brainmri.evaluation.external import read_groups_csv

    return {p.stem.removeprefix("external-groups-"): read_groups_csv(p) for p in out.glob("external-groups-*.csv")}


def fold_runs(out: Path, results: dict[str, dict[str, Any]], cv: int) -> dict[str, dict[str, Any]]:
    """k-fold results in the shape of repeated runs (each fold a run), for the paired tests."""
    return {
        arch: {
            "runs": [
                {"seed": k, "path": str(out / "runs" / arch / f"fold{k}"), "metrics": m, "external": {}}
                for k, m in enumerate(res["folds"])
            ]
        }  # fmt: skip
        for arch, res in results.items()
    }


def first_run(out: Path, results: dict[str, dict[str, Any]], cv: int | None) -> RunDir:
    """The run whose records stand for the comparison's settings: the first architecture's
    (its first fold, or its first seed)."""
    res = next(iter(results.values()))
    if "runs" in res:
        return RunDir(res["runs"][0]["path"])
    return RunDir(out / "runs" / next(iter(results)) / ("fold0" if cv else ""))


def write_comparison_report(
    out: Path,
    results: dict[str, dict[str, Any]],
    cv: int | None,
    meta: dict[str, Any],
    leakage: dict[str, Any] | None = None,
    extra: Sequence[dict[str, Any]] = (),
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` of a comparison folder from its runs' records."""
    archs = list(results)
    repeated = any("runs" in r for r in results.values())
    # The figures, gallery and checklist of a repeated comparison show its first seed's runs.
    shown_results = {a: r["runs"][0] for a, r in results.items()} if repeated else results
    first = first_run(out, results, cv)
    config = read_json(first.config, {})
    env = read_json(first.environment, {})
    prepare_info = read_json(Path(config["data"]) / data_mod.PREPARE_JSON, {})
    counts = split_counts(first.split) if not cv else None
    split_by = split_level(TrainConfig.from_dict(config), splitfile.read_split(first.split))
    notice = {
        "heading": "Not for clinical use",
        "notice": True,
        "text": [
            "Research software, not a medical device: these models are not validated for clinical "
            "diagnosis and must not be used to make or support clinical decisions."
        ],
    }
    preset = meta.get("preset")
    title = f"brainmri: ResNet comparison ({preset} preset)" if preset else "brainmri: architecture comparison"
    clusters = external_clusters(out)
    if repeated:
        head = repeats_sections(results, clusters)
    else:
        head = [*_results_sections(results, cv, env), *external_sections(out, results)]
        if cv:  # the folds pair the architectures: their differences with the corrected t-test
            head += pair_sections(fold_runs(out, results, cv), clusters, unit="fold")
    sections = [
        notice,
        *head,
        *localisation_sections(out, shown_results),
        *extra,
        _settings_section(config, env, archs, cv, counts, meta, prepare_info, leakage, split_by),
        _limits_section(config, cv, meta, prepare_info, split_by),
        *checklist_sections(out, shown_results, meta, leakage, split_by, repeated=repeated, title=title),
        *_per_arch_sections(out, shown_results, cv),
        *gallery_sections(shown_results),
    ]
    return render_report(out, sections, title=title)
