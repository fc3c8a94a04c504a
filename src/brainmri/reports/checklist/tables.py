"""The reporting checklists of a comparison: every item of CLAIM 2024 (44 items) and of
TRIPOD+AI (27 items, 52 numbered rows with their sub-items), numbered as the guidelines
number them (:mod:`brainmri.reports.checklist.items`), each answered from what the runs recorded
(:mod:`brainmri.reports.checklist.records`).

An item is *reported* (the value, and where the report or the run folder shows it), *not
available* (the records or the dataset do not hold it: the reason says which) or *not
applicable* (the reason says why). No item is left out, and the counts above the tables are
counted from the rows, so the report never says that everything is filled when it is not.

The answers are written once per topic (:mod:`brainmri.reports.checklist.answers_data`,
:mod:`brainmri.reports.checklist.answers_model`) and mapped here onto each guideline's numbers: where the two
guidelines ask the same thing, they get the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainmri.reports.checklist import answers_data as d
from brainmri.reports.checklist import answers_model as m
from brainmri.reports.checklist.items import GUIDELINES, Item
from brainmri.reports.checklist.records import HEADER, REPORTED, STATUSES, Answer, Records, gather

# --- the guidelines' numbers ----------------------------------------------------------------------

Fill = Callable[[Records], Answer]

CLAIM_ANSWERS: dict[str, Fill] = {
    "1": d.title_claim, "2": d.abstract, "3": d.background, "4": d.objectives, "5": d.design, "6": d.goal,
    "7": d.data_source, "8": d.eligibility, "9": d.preprocessing, "10": d.subsets, "11": d.deidentification,
    "12": d.missing_data, "13": d.acquisition, "14": d.reference_standard, "15": d.reference_rationale,
    "16": d.annotators, "17": d.test_annotation, "18": d.rater_variability, "19": d.partitions, "20": d.disjointness,
    "21": d.sample_size, "22": m.model, "23": m.software, "24": m.initialisation, "25": m.training, "26": m.selection,
    "27": m.ensembling, "28": m.metrics, "29": m.uncertainty, "30": m.robustness, "31": m.explainability,
    "32": m.internal, "33": m.external, "34": m.trial_registration, "35": d.flow, "36": d.characteristics,
    "37": m.performance, "38": m.diagnostic, "39": m.failures, "40": m.limitations, "41": m.implications,
    "42": m.protocol, "43": m.availability, "44": m.funding,
}  # fmt: skip

TRIPOD_ANSWERS: dict[str, Fill] = {
    "1": d.title_tripod, "2": d.abstract, "3a": d.context, "3b": d.target_population, "3c": d.inequalities,
    "4": d.objectives, "5a": d.data_sources_tripod, "5b": d.dates, "6a": d.setting, "6b": d.eligibility,
    "6c": d.treatments, "7": d.data_preparation, "8a": d.outcome, "8b": d.annotators, "8c": d.blinding,
    "9a": d.predictors_chosen, "9b": d.predictors_defined, "9c": d.predictor_assessors, "10": d.sample_size,
    "11": d.missing_data, "12a": d.partitions, "12b": d.predictor_handling, "12c": m.model_building,
    "12d": m.heterogeneity_methods, "12e": m.measures_and_plots, "12f": m.updating, "12g": m.predictions,
    "13": m.class_imbalance, "14": m.fairness, "15": m.output, "16": d.development_vs_evaluation, "17": m.ethics,
    "18a": m.funding, "18b": m.conflicts, "18c": m.protocol, "18d": m.registration, "18e": m.data_sharing,
    "18f": m.code_sharing, "19": m.involvement, "20a": d.flow, "20b": d.characteristics_tripod,
    "20c": d.development_vs_evaluation, "21": d.analysis_counts, "22": m.model_specification,
    "23a": m.performance_subgroups, "23b": m.heterogeneity_results, "24": m.updating_results, "25": m.interpretation,
    "26": m.limitations, "27a": m.input_handling, "27b": m.user_interaction, "27c": m.next_steps,
}  # fmt: skip

ANSWERS: dict[str, dict[str, Fill]] = {"CLAIM 2024": CLAIM_ANSWERS, "TRIPOD+AI": TRIPOD_ANSWERS}


# --- the section ----------------------------------------------------------------------------------


def checklist_rows(r: Records, name: str, items: tuple[Item, ...]) -> list[list[str]]:
    """One row per item of one guideline, in its order: number, item, status, text, where."""
    answers = ANSWERS[name]
    rows = []
    for item in items:
        a = answers[item.number](r)
        rows.append([item.number, item.name, a.status, a.text, a.where if a.status == REPORTED else "–"])
    return rows


def status_counts(rows: list[list[str]]) -> dict[str, int]:
    """How many rows have each status (every status present, zeros included)."""
    return {s: sum(row[2] == s for row in rows) for s in STATUSES}


def _summary(name: str, rows: list[list[str]], main_items: int) -> str:
    counts = status_counts(rows)
    unit = "items" if len(rows) == main_items else f"numbered rows ({main_items} items with their sub-items)"
    text = f"{name}: of {len(rows)} {unit}, " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    return text + (" (every item reported)." if counts[REPORTED] == len(rows) else ".")


def checklist_sections(
    out: Path,
    results: dict[str, dict[str, Any]],
    meta: dict[str, Any],
    leakage: dict[str, Any] | None,
    split_by: str,
    repeated: bool = False,
    title: str = "",
) -> list[dict[str, Any]]:
    """The checklist as report sections: a summary of the counts, then one table per guideline.

    ``results`` is arch -> {"metrics", "external", "path"} (one run per architecture: a repeated
    comparison passes each architecture's first seed, ``repeated`` says so); ``title`` is the
    report's, which the guidelines' first items judge.
    """
    records = gather(out, results, leakage, split_by, repeated=repeated, title=title, preset=meta.get("preset"))
    tables, summaries = [], []
    for name, items, main_items in GUIDELINES:
        rows = checklist_rows(records, name, items)
        summaries.append(_summary(name, rows, main_items))
        heading = f"{name} ({main_items} items" + ("" if len(items) == main_items else f", {len(items)} rows") + ")"
        tables.append({"heading": heading, "level": 3, "table": (HEADER, rows)})
    intro = (
        "Every item of CLAIM 2024 (Tejani et al., Radiology: Artificial Intelligence 2024) and TRIPOD+AI (Collins "
        "et al., BMJ 2024), numbered as in the guideline and paraphrased in a few words: reported (filled from this "
        "comparison's records, with where the report or the run folder shows it), not available (the records or the "
        "dataset do not hold it; the reason is given) or not applicable (the reason is given)."
    )
    shown = "" if not repeated else " The answers describe each architecture's first seed's run."
    return [{"heading": "Reporting checklist (CLAIM 2024, TRIPOD+AI)", "text": [intro + shown, *summaries]}, *tables]
