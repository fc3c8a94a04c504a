"""The answers of the reporting checklists (:mod:`brainmri.reports.checklist.tables`) about the model and its
evaluation: architecture, software, initialisation, training and selection, the metrics and
their uncertainty, internal and external testing, heterogeneity across sources, calibration,
explanations, failures, and the report's limitations and open-science items. Each function
answers one topic from the records; the checklist maps it onto the guidelines' item numbers.
"""

from __future__ import annotations

from brainmri.config import TrainConfig
from brainmri.labels import CLASSES
from brainmri.models.card import NOTICE
from brainmri.provenance import describe
from brainmri.reports.checklist.records import (
    LIMITS,
    NOTICE_SECTION,
    REPORTED,
    SETTINGS,
    Answer,
    Records,
    accuracy_text,
    ci_text,
    config_where,
    external_path,
    no_prepare,
    not_applicable,
    not_available,
    prepare_where,
    reported,
    short_label,
)
from brainmri.reports.repeats import pretty
from brainmri.training.records import recipe_text

# --- model and training --------------------------------------------------------------------------


def model(r: Records) -> Answer:
    size = r.config.get("image_size", "?")
    return reported(
        f"{', '.join(map(pretty, r.archs))} (torchvision), the final layer replaced by the paper's head (Dropout "
        f"0.2, Linear 128, ReLU, Dropout 0.2, Linear {len(CLASSES)}); input one grayscale slice, {size} x {size} px "
        f"in [0, 1], replicated to 3 channels and normalised inside the model; output {len(CLASSES)} logits, "
        "softmax probabilities",
        f"{SETTINGS} (Architectures); model card" + ("" if r.card else " (not in this folder)"),
    )


def software(r: Records) -> Answer:
    env = r.env
    if not env:
        return not_available(f"{r.rel(r.run.environment)} is not readable")
    core = ", ".join(f"{k} {env[k]}" for k in ("brainmri", "python", "torch", "torchvision", "numpy") if env.get(k))
    more = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v and k not in env)
    return reported(core + (f"; {more}" if more else ""), f"{SETTINGS} (Machine); {r.rel(r.run.environment)}")


def _weights(r: Records) -> str:
    record = (r.card or {}).get("weights_record") or {}
    if not record:
        weights = r.config.get("weights", "?")
        known = {"none": "random initialisation (trained from scratch)", "imagenet": "torchvision ImageNet weights"}
        why = r.card_note or "a run from before weights records"
        return f"{known.get(weights, weights)}; the card's weights record is not here ({why})"
    if record.get("kind") == "random initialisation":
        return "random initialisation (trained from scratch); no pretrained file"
    sha = record.get("sha256") or "not recorded (file not found when the run started)"
    return f"{record.get('enum') or record.get('kind')}; file {record.get('file')}; SHA-256 {sha}"


def initialisation(r: Records) -> Answer:
    return reported(_weights(r), f"{SETTINGS} (Weights); model card")


def training(r: Records) -> Answer:
    c = r.config
    if not c:
        return not_available(f"{config_where(r)} is not readable")
    recipe = recipe_text(TrainConfig.from_dict(c))
    aug = "on" if c.get("augment") else "off"
    return reported(
        f"{recipe}; {c.get('epochs', '?')} epochs, batch {c.get('batch_size', '?')}, {c.get('image_size', '?')} px, "
        f"fine-tuning {c.get('finetune', 'full')}, augmentation {aug}, class balance {c.get('balance', '?')}, seed "
        f"{c.get('seed', '?')}; {r.models_trained} model(s) trained in all"
        + (f" (the '{r.preset}' preset)" if r.preset else ""),
        f"{SETTINGS}; {config_where(r)}",
    )


def model_building(r: Records) -> Answer:
    base = training(r)
    if base.status != REPORTED:
        return base
    internal = "k-fold cross-validation" if r.cv else "a held-out test side that chose nothing"
    return base._replace(
        text=f"{', '.join(map(pretty, r.archs))} with the paper's head, trained: {base.text}; hyperparameters fixed "
        f"by the configuration (not tuned in this comparison); internal validation by {internal}"
    )


def selection(r: Records) -> Answer:
    chosen = (r.summaries.get(r.archs[0]) or {}).get("selection")
    if not chosen:
        chosen = (
            "best validation accuracy on the val side carved from training"
            if r.config.get("val_size")
            else "the last epoch (no validation side)"
        )
    if "test side" not in chosen:
        chosen += "; the test side chose nothing"
    return reported(chosen, f"{SETTINGS} (Model evaluated); {r.rel(r.run.summary)}")


def ensembling(r: Records) -> Answer:
    """Not applicable: no ensemble is built; flip averaging, where on, is named so that it is
    not mistaken for one."""
    flip = " (each image's probabilities are averaged with its mirror image's: test-time augmentation, not an ensemble)"
    return not_applicable("no ensemble: each architecture is one trained model" + (flip if r.config.get("tta") else ""))


def class_imbalance(r: Records) -> Answer:
    balance = r.config.get("balance", "?")
    how = {
        "oversample": "the smaller classes oversampled with augmented copies (the paper's way)",
        "class_weights": "the loss weighted by inverse class frequency",
        "none": "no class-imbalance method",
    }.get(balance, f"class balance '{balance}'")
    return reported(f"{how}; no recalibration for it beyond temperature scaling where fitted", f"{SETTINGS} (Epochs)")


# --- evaluation -----------------------------------------------------------------------------------


def metrics(r: Records) -> Answer:
    return reported(
        "accuracy; precision, sensitivity (recall), specificity, F1 and ROC-AUC per class and macro-averaged; "
        "expected calibration error (15 bins); compared with the paper's published accuracy",
        f"{r.results_where}; {r.uncertainty_where}; the per-architecture sections",
    )


def measures_and_plots(r: Records) -> Answer:
    base = metrics(r)
    return base._replace(
        text=base.text + "; plots: confusion matrix, ROC curves, reliability diagram, per-class bars, training curves"
    )


def uncertainty(r: Records) -> Answer:
    text = "95% percentile bootstrap CIs over the test images for accuracy and macro F1"
    if r.repeated:
        text += (
            "; across training seeds, each pair's accuracy difference with the corrected resampled t-test and a "
            "paired bootstrap of the images (a pair is told apart only when both CIs exclude zero)"
        )
    return reported(text, r.uncertainty_where)


def robustness(r: Records) -> Answer:
    """Reported only when something was varied (seeds, data source); a single run on one split
    measured no robustness, and the reason says which flags would."""
    parts = []
    if r.repeated:
        parts.append("the spread over training seeds")
    if r.externals:
        parts.append(f"the change of accuracy on data from other sources ({', '.join(r.externals)})")
    if not parts:
        return not_available(
            "one training run per architecture on one split and no external folder: neither the seed-to-seed spread "
            "(compare --seeds) nor robustness to other sources (--external) was measured"
        )
    where = [r.results_where] + [r.external_where(n) for n in r.externals if not r.repeated]
    return reported("; ".join(parts), "; ".join(where))


def _localisations(r: Records) -> list[str]:
    out = []
    for arch, ext in r.external.items():
        for name, m in ext.items():
            loc = m.get("localisation")
            if loc:
                pg = loc["pointing_game_report_half"]
                out.append(
                    f"{pretty(arch)} on {name}: {loc['chosen']}, pointing game {pg['mean']:.3f} "
                    f"({pg['low']:.3f}–{pg['high']:.3f}) on the boxes' report half"
                )
    return out


def explainability(r: Records) -> Answer:
    """Scored explanations (tumour boxes) where the records hold them; Grad-CAM overlays alone
    are reported as drawn but not validated."""
    scored = _localisations(r)
    if scored:
        return reported(
            "explanation maps scored against tumour boxes (method chosen on one half of the boxes, scored on the "
            "other): " + "; ".join(scored),
            "Where the models look; eval/<folder>/localisation/localisation.md",
        )
    if r.galleries:
        return reported(
            "Grad-CAM overlays of the misclassified held-out images; not validated against tumour locations (no "
            "tumour boxes given: compare --boxes)",
            "Failure gallery sections",
        )
    return not_available("no explanation was drawn or scored (no failure gallery, no tumour boxes)")


def internal(r: Records) -> Answer:
    parts = []
    for arch, m in r.metrics.items():
        if not m:
            continue
        val = (r.summaries.get(arch) or {}).get("best_val_acc")
        parts.append(f"{pretty(arch)} {accuracy_text(m)}" + (f", best validation accuracy {val:.3f}" if val else ""))
    if not parts:
        return not_available("no test-side metrics.json was found")
    side = "pooled out-of-fold predictions" if r.cv else "held-out test side"
    return reported(f"accuracy on the {side}: " + "; ".join(parts), r.results_where)


def external(r: Records) -> Answer:
    if not r.externals:
        return not_available("no external folder was given (compare/reproduce --external DIR)")
    parts = [
        f"{name}: "
        + ", ".join(f"{pretty(a)} {accuracy_text(e[name])}" for a, e in r.external.items() if name in e)
        + f" ({external_path(r, name)})"
        for name in r.externals
    ]
    return reported("; ".join(parts), "; ".join(r.external_where(n) for n in r.externals))


def heterogeneity_methods(r: Records) -> Answer:
    """The dataset has no hospitals or sites; the one cluster structure the records hold is the
    data source (the test side against each external folder), used where an external evaluation exists."""
    if not r.externals:
        return not_available(
            "the dataset has no site or source identifiers and no external folder was given, so heterogeneity "
            "across clusters cannot be examined"
        )
    return reported(
        "no hospital or site identifiers exist; the data sources are the clusters: each model's accuracy and "
        "per-class sensitivity on the test side and on each external folder, side by side",
        "; ".join(r.external_where(n) for n in r.externals),
    )


def heterogeneity_results(r: Records) -> Answer:
    if not r.externals:
        return heterogeneity_methods(r)
    parts = []
    for arch, m in r.metrics.items():
        if m:
            ext = ", ".join(
                f"{n} {e['accuracy']:.3f} (sensitivity {_sensitivities(e)})"
                for n, e in sorted(r.external.get(arch, {}).items())
            )
            parts.append(f"{pretty(arch)}: test side {m['accuracy']:.3f}, {ext}")
    return reported(
        "accuracy per source, and per class where a source's classes differ: " + "; ".join(parts),
        "; ".join(r.external_where(n) for n in r.externals),
    )


def _sensitivities(m: dict) -> str:
    """Per-class sensitivity of the classes an evaluation holds (those with images)."""
    return ", ".join(
        f"{short_label(c)} {v['recall']:.3f}"
        for c, v in m["per_class"].items()
        if v.get("support") and v["recall"] is not None
    )


def _temperatures(r: Records) -> list[str]:
    out = []
    for arch, m in r.metrics.items():
        t = (m or {}).get("temperature_scaling")
        if t:
            out.append(
                f"{pretty(arch)}: T = {t['temperature']:.2f} fitted on {t.get('fitted_on', 'the validation side')}, "
                f"test-side ECE {t['before']['ece']['value']:.3f} -> {t['after']['ece']['value']:.3f}"
            )
    return out


def updating(r: Records) -> Answer:
    """Temperature scaling is the only updating a run does; without it, nothing was updated."""
    if not _temperatures(r):
        return not_applicable("the models were not updated or recalibrated (no temperature fitted)")
    return reported(
        "temperature scaling, fitted on the validation side carved from training (never the test side), kept "
        "in the model card and applied by predict and serve",
        f"{r.rel(r.run.metrics)} (temperature_scaling)",
    )


def updating_results(r: Records) -> Answer:
    temps = _temperatures(r)
    if not temps:
        return updating(r)
    return reported("; ".join(temps), "metrics.json (temperature_scaling) of each run")


def predictions(r: Records) -> Answer:
    flip = ", each image's probabilities averaged with its mirror image's" if r.config.get("tta") else ""
    return reported(
        f"brainmri evaluate: the kept checkpoint (checkpoints/best.pt) in fp32{flip}; every probability in "
        "predictions.csv",
        f"{SETTINGS} (Inference); {r.rel(r.run.predictions)}",
    )


def output(r: Records) -> Answer:
    return reported(
        f"probabilities of the {len(CLASSES)} classes (softmax, temperature-scaled where fitted); the class is the "
        "most probable one, no threshold tuned",
        f"{SETTINGS} (Inference); model card",
    )


def fairness(r: Records) -> Answer:
    """Not available rather than not applicable: fairness matters for such a model, but the
    dataset holds no group to compare."""
    return not_available(
        "no fairness analysis is possible: the dataset has no demographic, site or scanner data to compare "
        "performance across groups"
    )


def performance(r: Records) -> Answer:
    parts = [
        f"{pretty(a)} accuracy {accuracy_text(m)}, macro F1 {m['macro']['f1']:.3f} ({ci_text(m, 'macro_f1')})"
        for a, m in r.metrics.items()
        if m
    ]
    if not parts:
        return not_available("no test-side metrics.json was found")
    return reported("; ".join(parts), f"{r.results_where}; {r.uncertainty_where}")


def performance_subgroups(r: Records) -> Answer:
    base = performance(r)
    return base._replace(
        text=base.text + "; per class in the per-architecture sections; no sociodemographic subgroups (no such data)"
    )


def diagnostic(r: Records) -> Answer:
    parts = [
        f"{pretty(a)}: macro ROC-AUC {m['roc_auc_macro']:.3f}"
        for a, m in r.metrics.items()
        if m and m.get("roc_auc_macro") is not None
    ]
    return reported(
        "sensitivity, specificity and ROC-AUC per class (no CIs for these; CIs for accuracy and macro F1)"
        + (f"; {'; '.join(parts)}" if parts else ""),
        "the per-architecture sections",
    )


def failures(r: Records) -> Answer:
    shown = r.galleries.items()
    if shown:
        return reported(
            "; ".join(f"{pretty(a)}: {g['misclassified']} misclassified held-out images" for a, g in shown)
            + "; shown with Grad-CAM, and the confusion matrices",
            "Failure gallery sections; the per-architecture confusion matrices",
        )
    why = " (cross-validation runs)" if r.cv else ""
    return reported(f"the confusion matrices only; no failure gallery was drawn{why}", "the per-architecture sections")


# --- discussion and other information ----------------------------------------------------------------


def limitations(r: Records) -> Answer:
    split = "not split by patient (no patient identifiers)" if r.split_by != "patient" else "patient groups as given"
    return reported(
        f"{split}; near-duplicates may remain; one public dataset of unknown scanners and protocols; the weights "
        "used and how far the scores compare with the paper's; not for clinical diagnosis",
        LIMITS,
    )


def interpretation(r: Records) -> Answer:
    verdict = "; the repeated runs end in a sentence on which pairs can be told apart" if r.repeated else ""
    return reported(
        "the architectures are ranked only where their CIs allow it, and the paper's numbers are set beside ours "
        f"with why they differ{verdict}; fairness cannot be discussed (no group data)",
        f"{r.results_where}; {r.uncertainty_where}; {LIMITS}",
    )


def implications(r: Records) -> Answer:
    return reported(f"none for practice: {NOTICE}", NOTICE_SECTION)


def next_steps(r: Records) -> Answer:
    return reported(
        "what the run cannot claim names what further work would need: patient identifiers for a patient-level "
        "split, data from other hospitals' routine care, and (for comparison with the paper) its settings",
        LIMITS,
    )


def input_handling(r: Records) -> Answer:
    check = (r.card or {}).get("input_check") or {}
    threshold = f" (threshold {check['threshold']:.3g} from the training side)" if check.get("threshold") else ""
    return reported(
        "predict, serve and evaluate --data check every input against what the model was trained on (checks on "
        f"the decoded image and an out-of-distribution score{threshold}) and warn; unreadable files are refused",
        "model card (input_check)" if check else f"model card ({r.card_note or 'no input check recorded'})",
    )


def user_interaction(r: Records) -> Answer:
    return not_applicable(f"not for use in care, so no clinical user or workflow: {NOTICE}")


def protocol(r: Records) -> Answer:
    command = " ".join(r.env.get("command") or []) or "not recorded"
    return reported(
        f"no written or registered protocol is recorded; the study is defined by its command ({command}), each "
        f"run's config.json and the code ({describe(r.env.get('code'))})",
        f"{SETTINGS} (Command, Code); {config_where(r)}",
    )


def availability(r: Records) -> Answer:
    model_state = (
        f"the trained model in {r.rel(r.run.best)}"
        if r.run.best.is_file()
        else f"the trained weights are not kept here ({r.card_note})"
    )
    return reported(
        f"code: {describe(r.env.get('code'))}; {model_state}; data: the public dataset at "
        f"{r.prep.get('settings', {}).get('source', '?')} with the prepared manifest",
        f"{SETTINGS} (Code, Data); {r.rel(r.run.environment)}",
    )


def data_sharing(r: Records) -> Answer:
    if not r.prep:
        return no_prepare(r)
    return reported(
        f"public dataset ({r.prep.get('settings', {}).get('source', '?')}); manifest.csv lists every file with its "
        f"status and group (SHA-256 {r.manifest_sha256}); each run's split.csv lists its sides",
        f"{SETTINGS} (Data); {prepare_where(r)}",
    )


def code_sharing(r: Records) -> Answer:
    code = r.env.get("code")
    if not code:
        return not_available(f"{r.rel(r.run.environment)} records no code version")
    return reported(f"brainmri, {describe(code)}", f"{SETTINGS} (Code); {r.rel(r.run.environment)}")


def model_specification(r: Records) -> Answer:
    """The checkpoint is the model's full specification; published results folders do not keep
    it, and then the item says what would rebuild it."""
    if r.card is None:
        return not_available(f"{r.card_note}; config.json and the code commit retrain the model")
    return reported(
        "the checkpoint with its model card (architecture, classes, preprocessing, weights record, split, metrics), "
        "usable by brainmri predict, serve and export (ONNX); the code is MIT-licensed",
        r.rel(r.run.best),
    )


def funding(r: Records) -> Answer:
    return not_available("no funding is recorded in the runs' records")


def conflicts(r: Records) -> Answer:
    return not_available("no conflicts of interest are recorded in the runs' records")


def registration(r: Records) -> Answer:
    return not_available("no study registration is recorded in the runs' records")


def trial_registration(r: Records) -> Answer:
    return not_applicable("not a clinical trial: a retrospective study of a public image dataset")


def ethics(r: Records) -> Answer:
    return not_available(
        "no ethics approval or waiver is recorded; the data are a public dataset without identifiers, used as released"
    )


def involvement(r: Records) -> Answer:
    return not_available("the records say nothing of patient or public involvement")
