"""The answers of the reporting checklists (:mod:`brainmri.reports.checklist.tables`) about the study's design
and its data: title and background, sources, eligibility, pre-processing, the reference
standard (the dataset's class folders), the partitions and the sample size. Each function
answers one topic from the records (:class:`brainmri.reports.checklist.records.Records`); the
checklist maps it onto the guidelines' item numbers.
"""

from __future__ import annotations

from brainmri.labels import CLASSES
from brainmri.models.card import INTENDED_USE, NOTICE
from brainmri.reports.checklist.records import (
    HERE,
    LIMITS,
    NOTICE_SECTION,
    REPORTED,
    SETTINGS,
    Answer,
    Records,
    external_path,
    no_prepare,
    not_applicable,
    not_available,
    per_class,
    prepare_where,
    removed_text,
    reported,
    short_label,
    sides_text,
)
from brainmri.reports.paper import PAPER_CITATION
from brainmri.reports.repeats import pretty

# --- title, background, design -------------------------------------------------------------------


def title_claim(r: Records) -> Answer:
    """Judged on the report's own title: the item asks the title to name the technology."""
    if "ResNet" in r.title or any(a in r.title for a in r.archs):
        return reported(f"'{r.title}': deep convolutional networks ({', '.join(map(pretty, r.archs))})", "report title")
    return not_available(
        f"the title ('{r.title or 'none'}') does not name the technology; the networks are listed in {SETTINGS}"
    )


def title_tripod(r: Records) -> Answer:
    """TRIPOD+AI asks more of the title (population, outcome) than the report's title gives."""
    return not_available(
        f"the title ('{r.title or 'none'}') names the models, not the population (brain MRI slices) or the outcome "
        f"(tumour class); both are stated in {NOTICE_SECTION} and the model card"
    )


def abstract(r: Records) -> Answer:
    return not_available(
        "the report is generated from the run records and has no structured abstract; "
        f"{r.results_where} and {SETTINGS} hold what one would summarise"
    )


def _intended_use(r: Records) -> str:
    return (r.card or {}).get("intended_use") or INTENDED_USE


def background(r: Records) -> Answer:
    return reported(
        f"reproduces {PAPER_CITATION} (ResNet classifiers of brain tumours on MRI slices) with the statistics it "
        f"lacked; intended use: {_intended_use(r)} {NOTICE}",
        f"{r.results_where} (paper's values); {NOTICE_SECTION}",
    )


def context(r: Records) -> Answer:
    return reported(
        "diagnostic: the tumour class of one MRI slice (glioma, meningioma, pituitary tumour, no tumour); "
        f"rationale: to test the published comparison of {PAPER_CITATION} (an existing model) on a "
        f"{'random' if r.config.get('split_policy') == 'random' else 'duplicate-aware'} split with confidence "
        "intervals",
        f"{r.results_where}; {LIMITS}",
    )


def target_population(r: Records) -> Answer:
    return reported(
        f"no clinical target population or place in a care pathway: {_intended_use(r)} Intended users are "
        f"researchers. {NOTICE}",
        f"{NOTICE_SECTION}; model card",
    )


def inequalities(r: Records) -> Answer:
    return not_available(
        "the dataset holds no sociodemographic data, so no inequalities between groups can be described"
    )


def objectives(r: Records) -> Answer:
    ext = f" and on the external folder(s) {', '.join(r.externals)}" if r.externals else ""
    return reported(
        f"development (training) of {', '.join(map(pretty, r.archs))} and the evaluation of each on a held-out "
        f"test side{ext}; comparison with the paper's published accuracy; no pre-specified hypothesis",
        f"{r.results_where}; {SETTINGS}",
    )


def design(r: Records) -> Answer:
    return reported(
        "retrospective: images of a public dataset collected before and apart from this study", f"{SETTINGS} (Data)"
    )


def goal(r: Records) -> Answer:
    return reported(
        "model creation and comparison of architectures, reproducing a published study; exploratory (no "
        "non-inferiority margin or pre-specified hypothesis)",
        r.results_where,
    )


# --- data ---------------------------------------------------------------------------------------


def data_source(r: Records) -> Answer:
    if not r.prep:
        return no_prepare(r)
    source = r.prep.get("settings", {}).get("source", "?")
    return reported(
        f"training and test images from {source}, prepared into {r.prepared} (manifest.csv SHA-256 "
        f"{r.manifest_sha256})",
        f"{SETTINGS} (Data); {prepare_where(r)}",
    )


def data_sources_tripod(r: Records) -> Answer:
    base = data_source(r)
    if base.status != REPORTED:
        return base
    ext = "; ".join(f"evaluation also on {name} ({external_path(r, name)}), from other sources" for name in r.externals)
    return base._replace(
        text=base.text
        + (f"; {ext}" if ext else "")
        + "; used because it is the data of the reproduced paper; how representative it is of any clinical "
        "population is unknown (the dataset documents no sampling)"
    )


def eligibility(r: Records) -> Answer:
    if not r.prep:
        return no_prepare(r)
    label_map = r.prep.get("settings", {}).get("label_map") or {}
    mapped = f" (folder names mapped by {label_map})" if label_map else ""
    threshold = r.prep.get("settings", {}).get("phash_threshold", "?")
    return reported(
        f"every image in the source's class folders{mapped}: {r.prep.get('files', '?')} files; excluded: "
        f"{removed_text(r.prep)} (perceptual-hash threshold {threshold}); {r.prep.get('kept', '?')} kept",
        f"{SETTINGS} (Data); {prepare_where(r)}; manifest.csv (one row per file with its status)",
    )


def _preprocessing(r: Records, keys: tuple[str, ...] = ("decode", "resize", "input", "in_model")) -> tuple[str, str]:
    """What was done to an image before the model saw it (the card's record of the steps
    ``keys``), or, without the card, what the config and prepare.json say of the sizes."""
    pre = dict((r.card or {}).get("preprocessing") or {})
    if pre:
        if "mean" in pre and "in_model" in pre:
            mean, std = (", ".join(f"{v:.3f}" for v in pre[k]) for k in ("mean", "std"))
            pre["in_model"] = pre["in_model"].replace("mean/std below", f"mean ({mean}) and std ({std})")
        return "; ".join(f"{k.replace('_', ' ')}: {pre[k]}" for k in keys if k in pre), "model card"
    size = r.prep.get("settings", {}).get("size", "?")
    return (
        f"grayscale, prepared at {size} px and resized to {r.config.get('image_size', '?')} px; scaled to [0, 1], "
        f"replicated to 3 channels and normalised inside the model (the card with the full record: {r.card_note})",
        f"{SETTINGS} (Image size); {prepare_where(r)}",
    )


def preprocessing(r: Records) -> Answer:
    text, where = _preprocessing(r)
    return reported(text, where)


def data_preparation(r: Records) -> Answer:
    text, where = _preprocessing(r)
    checks = (
        f"; quality checks: exact and perceptual-hash duplicates, label conflicts and unreadable files removed "
        f"({removed_text(r.prep)})"
        if r.prep
        else ""
    )
    return reported(
        text + checks + "; whether this differs across sociodemographic groups cannot be checked (no such data)",
        f"{where}; {SETTINGS} (Data)",
    )


def predictor_handling(r: Records) -> Answer:
    text, where = _preprocessing(r, ("resize", "input", "in_model"))
    return reported(f"the pixels are the predictors: {text}", where)


def subsets(r: Records) -> Answer:
    limit = r.config.get("limit_per_class")
    if limit:
        return reported(f"at most {limit} images per class and side (a subset, chosen by the seeded split)", SETTINGS)
    return reported("no subset: every kept image is used", f"{SETTINGS} (Split)")


def deidentification(r: Records) -> Answer:
    """Not applicable rather than not available: this study received no identifiable data to
    de-identify; what the dataset's authors did is a property of the source, said in the reason."""
    return not_applicable(
        "no identifiable data were handled: the public dataset is released as image files without patient "
        "metadata; any de-identification was its authors' and is not documented"
    )


def missing_data(r: Records) -> Answer:
    if not r.prep:
        return no_prepare(r)
    unreadable = (r.prep.get("removed") or {}).get("unreadable", 0)
    return reported(
        f"{unreadable} unreadable file(s) excluded (listed with their status in manifest.csv); every image has its "
        "label (its folder) and no other variable is used, so nothing else can be missing",
        f"{SETTINGS} (Data); {prepare_where(r)}",
    )


def acquisition(r: Records) -> Answer:
    return not_available("the dataset publishes no scanner, sequence or acquisition metadata (image files only)")


def dates(r: Records) -> Answer:
    return not_available("the dataset publishes no dates of acquisition")


def setting(r: Records) -> Answer:
    return not_available("the dataset documents no setting, centres or locations (no site metadata)")


def treatments(r: Records) -> Answer:
    return not_available("the dataset records no treatments; whether any slice was imaged after treatment is unknown")


# --- reference standard (outcome) and predictors --------------------------------------------------


def reference_standard(r: Records) -> Answer:
    """The reference standard is the dataset's folder labels: what they are is known and
    reported; how its authors made them is not documented, and the text says so."""
    classes = ", ".join(map(short_label, CLASSES))
    return reported(
        f"the class folder each image came from, mapped onto {classes}; the labels were assigned by the public "
        "dataset's authors, who do not document how (e.g. histopathology or a radiologist's reading)",
        f"{prepare_where(r)} (label map); manifest.csv (label per file)",
    )


def outcome(r: Records) -> Answer:
    base = reference_standard(r)
    return base._replace(
        text=base.text + "; diagnostic, so no time horizon: the class of the slice when it was imaged; whether the "
        "labels were assessed alike across groups is unknown"
    )


def reference_rationale(r: Records) -> Answer:
    return reported(
        "the only labels the dataset provides, and those of the reproduced paper; no alternative reference exists here",
        HERE,
    )


def annotators(r: Records) -> Answer:
    return not_available("the dataset's authors do not say who assigned the labels, or their qualifications")


def test_annotation(r: Records) -> Answer:
    return not_available(
        "the test side's labels are the same class folders (no separate annotation of the test set); how they "
        "were made is not documented"
    )


def rater_variability(r: Records) -> Answer:
    """No rater data exist; the label conflicts prepare found among duplicates are the one
    measured sign of label disagreement, so they are given with the reason."""
    conflicts = (r.prep.get("removed") or {}).get("label_conflict")
    seen = (
        f"; the only sign of label disagreement: {conflicts} image(s) in "
        f"{r.prep.get('label_conflict_groups', '?')} duplicate group(s) with conflicting labels, excluded by prepare"
        if conflicts is not None
        else ""
    )
    return not_available(f"one label per image and no repeated readings{seen}")


def blinding(r: Records) -> Answer:
    return not_available(
        "whether the labels were assigned blind to anything is not documented by the dataset's authors"
    )


def predictors_chosen(r: Records) -> Answer:
    return reported(
        f"the slice's pixels are the only input ({r.config.get('image_size', '?')} x {r.config.get('image_size', '?')} "
        "px); no predictor was chosen or pre-selected",
        f"{SETTINGS} (Image size)",
    )


def predictors_defined(r: Records) -> Answer:
    text, where = _preprocessing(r, ("decode", "resize"))
    return reported(f"one MRI slice as an image ({text}); how it was acquired is not documented", where)


def predictor_assessors(r: Records) -> Answer:
    return not_applicable("the predictors are image pixels, not read or interpreted by a person")


# --- partitions and sample size ----------------------------------------------------------------------


def partitions(r: Records) -> Answer:
    c = r.config
    if r.cv:
        how = "stratified group k-fold cross-validation; the first fold: "
    elif c.get("split_policy") == "random":
        how = f"{c.get('test_size', 0.2):.0%} held out image by image, stratified by class, duplicates kept: "
    else:
        how = f"{c.get('test_size', 0.2):.0%} held out, stratified by class, whole duplicate groups on one side: "
    val = f"; a validation side of {c['val_size']:.0%} carved from training" if c.get("val_size") else ""
    return reported(
        how + (sides_text(r.counts) or "split.csv not found") + f" (seed {c.get('seed', '?')}){val}",
        f"{SETTINGS} (Split); {r.rel(r.run.split)}",
    )


def disjointness(r: Records) -> Answer:
    where = f"{SETTINGS} (Split level); {r.rel(r.run.split)}"
    if not r.leakage:
        return reported(f"split level {r.split_by}; cross-validation folds, no single split to check", where)
    crossing = r.leakage["crossing_groups"]
    verdict = (
        "disjoint: no duplicate group crosses the split"
        if crossing == 0
        else (
            f"NOT disjoint: {crossing} duplicate groups cross the split, "
            f"{r.leakage['test_images_with_training_copy']} test images have a copy in training"
        )
    )
    patients = "" if r.split_by == "patient" else "; not by patient (the dataset has no patient identifiers)"
    return reported(f"split level {r.split_by}; checked on split.csv: {verdict}{patients}", where)


def _analysis_counts(r: Records) -> str:
    ext = "; ".join(f"{name}: {r.first_external(name)['n']} images" for name in r.externals)
    return f"images (not patients) per side and class: {sides_text(r.counts) or '?'}" + (
        f"; external {ext}" if ext else ""
    )


def sample_size(r: Records) -> Answer:
    """The counts are reported; that no sample-size calculation was made is said, not hidden:
    the size is what the public dataset holds."""
    if not r.counts and not r.prep:
        return no_prepare(r)
    limit = f", at most {r.config['limit_per_class']} per class and side" if r.config.get("limit_per_class") else ""
    return reported(
        _analysis_counts(r) + ". No formal sample-size calculation: the size is what the dataset holds after "
        f"removing duplicates ({r.prep.get('kept', '?')} images){limit}; its sufficiency shows only in the width of "
        "the CIs",
        f"{SETTINGS} (Split); {r.rel(r.run.split)}; {prepare_where(r)}",
    )


def analysis_counts(r: Records) -> Answer:
    return reported(
        _analysis_counts(r) + "; the class is the outcome, so these are also the outcome events",
        f"{SETTINGS} (Split); {r.rel(r.run.split)}",
    )


def flow(r: Records) -> Answer:
    if not r.prep:
        return no_prepare(r)
    sources = {name: r.first_external(name).get("source") or {} for name in r.externals}
    left = [
        f"{name}: {len(src.get('training_overlap') or [])} left out as copies of training images, "
        f"{len(src.get('skipped') or [])} skipped"
        for name, src in sources.items()
    ]
    return reported(
        f"{r.prep.get('files', '?')} files -> {removed_text(r.prep)} removed -> {r.prep.get('kept', '?')} images "
        f"({per_class(r.prep.get('after') or {})}) -> {sides_text(r.counts) or '?'}"
        + (f"; external {'; '.join(left)}" if left else "")
        + ". Counts of images, not patients; no flow diagram is drawn",
        f"{SETTINGS} (Data, Split); {prepare_where(r)}",
    )


def characteristics(r: Records) -> Answer:
    return not_available(
        "the dataset has no demographic or clinical data (no age, sex, site or scanner); only each image's class, "
        f"whose counts per partition are in {SETTINGS} (Split)"
    )


def characteristics_tripod(r: Records) -> Answer:
    ext = "; ".join(f"{name}: " + _external_classes(r, name) for name in r.externals)
    return reported(
        f"per source, images per class: prepared data {per_class(r.prep.get('after') or {}) or '?'}"
        + (f"; {ext}" if ext else "")
        + f"; {(r.prep.get('removed') or {}).get('unreadable', '?')} unreadable. The dataset holds no demographics, "
        "dates or treatments, so no other characteristic can be given",
        f"{SETTINGS} (Data, Split)" + "".join(f"; {r.external_where(n)}" for n in r.externals),
    )


def development_vs_evaluation(r: Records) -> Answer:
    if not r.externals:
        return not_applicable("evaluated only on a held-out side of the development data (no external folder)")
    train = r.counts.get("train") or {}
    return reported(
        f"training side per class: {per_class(train) or '?'}; "
        + "; ".join(f"{n}: " + _external_classes(r, n) for n in r.externals)
        + "; no predictor other than the image exists to compare",
        "; ".join(r.external_where(n) for n in r.externals),
    )


def _external_classes(r: Records, name: str) -> str:
    m = r.first_external(name)
    return per_class({c: v["support"] for c, v in m["per_class"].items() if v["support"]})
