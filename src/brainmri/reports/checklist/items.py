"""The items of the two reporting guidelines a comparison report answers, numbered as the
guidelines number them, each with a short paraphrase of what it asks (not the guideline's
wording, which readers should take from the source).

* **CLAIM 2024**: Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial
  Intelligence in Medical Imaging (CLAIM): 2024 Update. Radiol Artif Intell 2024;6(4):e240300,
  doi:10.1148/ryai.240300. 44 items, numbered 1 to 44.
* **TRIPOD+AI**: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance
  for reporting clinical prediction models that use regression or machine learning methods.
  BMJ 2024;385:e078378, doi:10.1136/bmj-2023-078378. 27 items, 52 numbered rows with the
  sub-items (3a-3c, 5a-5b, ...).

Where the lists were taken from: the two articles themselves could not be read here. The
numbers, sections and topics were taken from public transcriptions of the checklists and
checked against each other: for CLAIM 2024, a printable checklist of the 2024 items under
their section headings (with the article's citation), a checklist summary that says it is
not verified against the published table, and an item-by-item mapping of CLAIM items 16-25;
for TRIPOD+AI, a transcription of the published checklist (CC BY 4.0) and a second one of
its items 1-6c. They agree on every number and topic. The short names are our paraphrases,
not the guidelines' wording: check the published checklists before citing an item.
"""

from __future__ import annotations

from typing import NamedTuple


class Item(NamedTuple):
    """One numbered item: its number as the guideline prints it, a short paraphrase, and the
    guideline's section (for grouping, not shown in every table)."""

    number: str
    name: str
    section: str


CLAIM_2024: tuple[Item, ...] = (
    Item("1", "Title or abstract identifies an AI study and the kind of technology", "Title / abstract"),
    Item("2", "Summary of design, methods, results and conclusions", "Abstract"),
    Item("3", "Scientific and clinical background; intended use and role of the AI", "Introduction"),
    Item("4", "Study aims, objectives and hypotheses", "Introduction"),
    Item("5", "Prospective or retrospective study", "Methods: study design"),
    Item("6", "Study goal (e.g. model creation, feasibility, non-inferiority)", "Methods: study design"),
    Item("7", "Data sources", "Methods: data"),
    Item("8", "Inclusion and exclusion criteria", "Methods: data"),
    Item("9", "Data pre-processing", "Methods: data"),
    Item("10", "Selection of data subsets", "Methods: data"),
    Item("11", "De-identification methods", "Methods: data"),
    Item("12", "How missing data were handled", "Methods: data"),
    Item("13", "Image acquisition protocol", "Methods: data"),
    Item("14", "Definition of the reference standard and how it was obtained", "Methods: reference standard"),
    Item("15", "Rationale for the choice of reference standard", "Methods: reference standard"),
    Item("16", "Source of the reference annotations; annotators' qualifications", "Methods: reference standard"),
    Item("17", "Annotation of the test set", "Methods: reference standard"),
    Item("18", "Inter- and intra-rater variability of the annotations", "Methods: reference standard"),
    Item("19", "How data were assigned to partitions", "Methods: data partitions"),
    Item("20", "Level at which partitions are disjoint", "Methods: data partitions"),
    Item("21", "Intended sample size and how it was determined", "Methods: testing data"),
    Item("22", "Detailed description of the model (inputs, outputs, layers)", "Methods: model"),
    Item("23", "Software libraries, frameworks and packages", "Methods: model"),
    Item("24", "Initialisation of model parameters", "Methods: model"),
    Item("25", "Details of the training approach", "Methods: training"),
    Item("26", "Method of selecting the final model", "Methods: training"),
    Item("27", "Ensembling techniques", "Methods: training"),
    Item("28", "Metrics of model performance", "Methods: evaluation"),
    Item("29", "Statistical measures of significance and uncertainty", "Methods: evaluation"),
    Item("30", "Robustness or sensitivity analysis", "Methods: evaluation"),
    Item("31", "Explainability or interpretability methods and their validation", "Methods: evaluation"),
    Item("32", "Evaluation on internal data", "Methods: evaluation"),
    Item("33", "Testing on external data", "Methods: evaluation"),
    Item("34", "Clinical trial registration", "Methods: evaluation"),
    Item("35", "Numbers of patients or examinations included and excluded", "Results: data"),
    Item("36", "Demographic and clinical characteristics in each partition", "Results: data"),
    Item("37", "Performance metrics with statistical uncertainty", "Results: model performance"),
    Item("38", "Estimates of diagnostic performance and their precision", "Results: model performance"),
    Item("39", "Failure analysis of incorrect results", "Results: model performance"),
    Item("40", "Study limitations", "Discussion"),
    Item("41", "Implications for practice; intended use and clinical role", "Discussion"),
    Item("42", "Reference to the full study protocol or technical details", "Other information"),
    Item("43", "Availability of software, trained model and data", "Other information"),
    Item("44", "Sources of funding; role of funders", "Other information"),
)


TRIPOD_AI: tuple[Item, ...] = (
    Item("1", "Title: a prediction model study, its population and outcome", "Title"),
    Item("2", "Abstract (TRIPOD+AI for Abstracts)", "Abstract"),
    Item("3a", "Healthcare context and rationale; existing models", "Introduction: background"),
    Item("3b", "Target population, intended purpose and users", "Introduction: background"),
    Item("3c", "Known health inequalities between sociodemographic groups", "Introduction: background"),
    Item("4", "Objectives: development, evaluation or both", "Introduction: objectives"),
    Item("5a", "Data sources, rationale and representativeness", "Methods: data"),
    Item("5b", "Dates of the data (accrual, follow-up)", "Methods: data"),
    Item("6a", "Setting; number and location of centres", "Methods: participants"),
    Item("6b", "Eligibility criteria", "Methods: participants"),
    Item("6c", "Treatments received and how they were handled", "Methods: participants"),
    Item("7", "Data pre-processing and quality checks, across groups", "Methods: data preparation"),
    Item("8a", "Outcome: definition, how and when assessed, rationale", "Methods: outcome"),
    Item("8b", "Qualifications and demographics of outcome assessors", "Methods: outcome"),
    Item("8c", "Blinding of outcome assessment", "Methods: outcome"),
    Item("9a", "Choice of initial predictors and any pre-selection", "Methods: predictors"),
    Item("9b", "Definition of predictors and how they were measured", "Methods: predictors"),
    Item("9c", "Qualifications and demographics of predictor assessors", "Methods: predictors"),
    Item("10", "How the sample size was arrived at, and whether sufficient", "Methods: sample size"),
    Item("11", "How missing data were handled", "Methods: missing data"),
    Item("12a", "How the data were used (partitioning)", "Methods: analytical methods"),
    Item("12b", "Handling of predictors (rescaling, standardisation)", "Methods: analytical methods"),
    Item("12c", "Model type, building steps, tuning, internal validation", "Methods: analytical methods"),
    Item("12d", "Heterogeneity across clusters (e.g. hospitals)", "Methods: analytical methods"),
    Item("12e", "Performance measures and plots", "Methods: analytical methods"),
    Item("12f", "Model updating (e.g. recalibration)", "Methods: analytical methods"),
    Item("12g", "How predictions were calculated for evaluation", "Methods: analytical methods"),
    Item("13", "Class imbalance methods", "Methods: class imbalance"),
    Item("14", "Approaches to model fairness", "Methods: fairness"),
    Item("15", "Model output; classification thresholds", "Methods: model output"),
    Item("16", "Differences between development and evaluation data", "Methods: training versus evaluation"),
    Item("17", "Ethical approval and consent", "Methods: ethical approval"),
    Item("18a", "Funding and role of funders", "Open science"),
    Item("18b", "Conflicts of interest", "Open science"),
    Item("18c", "Where the protocol can be accessed", "Open science"),
    Item("18d", "Study registration", "Open science"),
    Item("18e", "Availability of the study data", "Open science"),
    Item("18f", "Availability of the analytical code", "Open science"),
    Item("19", "Patient and public involvement", "Patient and public involvement"),
    Item("20a", "Flow of participants; numbers with and without the outcome", "Results: participants"),
    Item("20b", "Characteristics overall and per data source", "Results: participants"),
    Item("20c", "Evaluation data compared with development data", "Results: participants"),
    Item("21", "Numbers of participants and outcome events in each analysis", "Results: model development"),
    Item("22", "Full model specification and access to it", "Results: model specification"),
    Item("23a", "Performance with confidence intervals, incl. key subgroups", "Results: model performance"),
    Item("23b", "Heterogeneity of performance across clusters", "Results: model performance"),
    Item("24", "Results of any model updating", "Results: model updating"),
    Item("25", "Overall interpretation, including fairness", "Discussion: interpretation"),
    Item("26", "Limitations", "Discussion: limitations"),
    Item("27a", "Handling of poor-quality or unavailable input when used", "Discussion: usability"),
    Item("27b", "User interaction and expertise required", "Discussion: usability"),
    Item("27c", "Next steps for research; applicability and generalisability", "Discussion: usability"),
)


#: The guidelines a report answers: (heading, items, how many main items it counts).
GUIDELINES: tuple[tuple[str, tuple[Item, ...], int], ...] = (
    ("CLAIM 2024", CLAIM_2024, 44),
    ("TRIPOD+AI", TRIPOD_AI, 27),
)


def main_number(number: str) -> int:
    """The main item a (sub-)item belongs to: ``"12d"`` -> 12."""
    return int(number.rstrip("abcdefg"))
