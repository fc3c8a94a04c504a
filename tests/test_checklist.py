"""The reporting checklists: every item of CLAIM 2024 (1..44) and TRIPOD+AI (1..27 with their
sub-items) in the guidelines' order, each with a valid status, a reason wherever it is not
reported, and counts in the text that are the rows' own, for a small real run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from brainmri.config import TrainConfig
from brainmri.data import splitfile
from brainmri.data.splits import split_level
from brainmri.evaluation.evaluate import evaluate_run
from brainmri.experiments.compare import leakage_counts, run_record
from brainmri.files import read_json
from brainmri.render.document import render_report
from brainmri.reports.checklist.items import CLAIM_2024, GUIDELINES, TRIPOD_AI, main_number
from brainmri.reports.checklist.records import NOT_APPLICABLE, NOT_AVAILABLE, REPORTED, STATUSES
from brainmri.reports.checklist.tables import checklist_sections, status_counts
from brainmri.rundir import RunDir


@pytest.fixture(scope="module")
def evaluated_run(trained_run: Path, sartaj: Path, tmp_path_factory) -> Path:
    """A copy of the tiny trained run (the session's run stays as other tests expect it),
    evaluated on its test side and on a small folder from the dataset's other half."""
    base = tmp_path_factory.mktemp("checklist")
    run = base / "runs" / "resnet18"
    shutil.copytree(trained_run, run)
    evaluate_run(run, n_bootstrap=50, device="cpu")
    external = base / "other-source"
    for folder, label in (("glioma", "glioma_tumor"), ("notumor", "no_tumor")):
        (external / folder).mkdir(parents=True)
        for f in sorted((sartaj / "Testing" / label).iterdir())[-3:]:
            Image.open(f).convert("L").save(external / folder / f"{f.stem}.png")
    evaluate_run(run, data=external, name="other-source", n_bootstrap=50, device="cpu")
    return run


def _sections(run: Path, repeated: bool = False) -> list[dict]:
    split = RunDir(run).split
    config = TrainConfig.from_dict(read_json(RunDir(run).config))
    split_by = split_level(config, splitfile.read_split(split))
    results = {"resnet18": run_record(run)}
    out = run.parent.parent
    return checklist_sections(out, results, {}, leakage_counts(split), split_by, repeated=repeated,
                              title="brainmri: ResNet comparison (quick preset)")  # fmt: skip


def _tables(sections: list[dict]) -> dict[str, list[list[str]]]:
    return {name: next(s["table"][1] for s in sections if s["heading"].startswith(name)) for name, _, _ in GUIDELINES}


def _check_complete(sections: list[dict]) -> dict[str, list[list[str]]]:
    """Every item numbered as in its guideline, a valid status, a reason where not reported,
    and the counts of the text equal to the rows'."""
    tables = _tables(sections)
    claim, tripod = tables["CLAIM 2024"], tables["TRIPOD+AI"]
    assert [r[0] for r in claim] == [str(i) for i in range(1, 45)]
    assert [r[0] for r in tripod] == [i.number for i in TRIPOD_AI]
    assert sorted({main_number(r[0]) for r in tripod}) == list(range(1, 28)) and len(tripod) == 52
    assert all(re.fullmatch(r"\d{1,2}[a-g]?", r[0]) for r in tripod)
    assert [r[1] for r in claim] == [i.name for i in CLAIM_2024]
    summaries = {name: next(t for t in sections[0]["text"] if t.startswith(f"{name}: ")) for name in tables}
    for name, rows in tables.items():
        for number, item, status, answer, where in rows:
            assert status in STATUSES, (name, number, status)
            assert answer.strip() and item.strip(), (name, number)
            if status == REPORTED:
                assert where.strip() not in ("", "–"), (name, number, "a reported item says where")
            else:
                assert where == "–" and len(answer) > 15, (name, number, "an unreported item gives its reason")
            assert "MISSING" not in answer
        counts = status_counts(rows)
        stated = re.match(
            r".*: of (\d+) [^,]*, (\d+) reported, (\d+) not available, (\d+) not applicable", summaries[name]
        )
        assert stated, summaries[name]
        assert [int(g) for g in stated.groups()] == [len(rows), counts[REPORTED], counts[NOT_AVAILABLE],
                                                     counts[NOT_APPLICABLE]]  # fmt: skip
        assert ("every item reported" in summaries[name]) == (counts[REPORTED] == len(rows))
    assert "every item is filled" not in " ".join(sections[0]["text"]).lower()
    return tables


def test_checklists_number_every_item_and_count_what_they_say(evaluated_run, tmp_path):
    sections = _sections(evaluated_run)
    tables = _check_complete(sections)
    claim = {r[0]: r for r in tables["CLAIM 2024"]}
    tripod = {r[0]: r for r in tables["TRIPOD+AI"]}

    # The items the old checklist lacked: reference standard, sample size, fairness, heterogeneity.
    assert claim["14"][2] == REPORTED and "do not document how" in claim["14"][3]
    assert claim["16"][2] == NOT_AVAILABLE and tripod["8b"][2] == NOT_AVAILABLE
    counts = {}
    for row in splitfile.read_split(RunDir(evaluated_run).split):
        counts.setdefault(row["side"], {}).setdefault(row["label"], 0)
        counts[row["side"]][row["label"]] += 1
    test = counts["test"]
    expected = f"test {sum(test.values())} (" + ", ".join(f"{k.removesuffix('_tumor')} {v}" for k, v in
                                                         sorted(test.items())) + ")"  # fmt: skip
    for row in (claim["21"], tripod["10"]):
        assert row[2] == REPORTED and expected in row[3] and "No formal sample-size calculation" in row[3]
    assert tripod["14"][2] == NOT_AVAILABLE and "no fairness analysis" in tripod["14"][3]
    assert claim["36"][2] == NOT_AVAILABLE and "no demographic" in claim["36"][3]
    for number in ("12d", "23b"):
        assert tripod[number][2] == REPORTED and "other-source" in tripod[number][4]
    assert claim["33"][2] == REPORTED and "other-source: ResNet-18" in claim["33"][3]
    assert claim["20"][2] == REPORTED and "checked on split.csv: disjoint" in claim["20"][3]
    assert claim["24"][2] == REPORTED and "random initialisation" in claim["24"][3]
    commit = read_json(RunDir(evaluated_run).environment)["code"]["commit"]
    if commit:
        assert commit[:10] in claim["43"][3] and commit[:10] in tripod["18f"][3]
    assert claim["34"][2] == NOT_APPLICABLE and tripod["27b"][2] == NOT_APPLICABLE
    metrics = read_json(RunDir(evaluated_run).metrics)
    assert f"{metrics['accuracy']:.3f}" in claim["37"][3]
    if "temperature_scaling" in metrics:
        assert tripod["12f"][2] == REPORTED and tripod["24"][2] == REPORTED

    repeated = {r[0]: r for r in _check_complete(_sections(evaluated_run, repeated=True))["CLAIM 2024"]}
    assert repeated["29"][4] == "Paired differences" and "corrected resampled t-test" in repeated["29"][3]
    assert "Results over repeated runs" in repeated["33"][4]

    md, _ = render_report(tmp_path, sections, title="checklist")
    text = md.read_text()
    assert "## Reporting checklist (CLAIM 2024, TRIPOD+AI)" in text
    assert "### CLAIM 2024 (44 items)" in text and "### TRIPOD+AI (27 items, 52 rows)" in text
    assert "| 44 | Sources of funding" in text and "| 27c |" in text


def test_a_run_without_its_checkpoint_or_external_folder_says_what_is_unknown(evaluated_run, tmp_path):
    """A committed results folder keeps no checkpoint: the card's items say so, nothing fails."""
    run = tmp_path / "runs" / "resnet18"
    shutil.copytree(evaluated_run, run, ignore=shutil.ignore_patterns("*.pt", "eval"))
    tables = _check_complete(_sections(run))
    claim = {r[0]: r for r in tables["CLAIM 2024"]}
    tripod = {r[0]: r for r in tables["TRIPOD+AI"]}
    assert tripod["22"][2] == NOT_AVAILABLE and "best.pt is not in" in tripod["22"][3]
    assert claim["33"][2] == NOT_AVAILABLE and "--external" in claim["33"][3]
    assert tripod["20c"][2] == NOT_APPLICABLE and tripod["12d"][2] == NOT_AVAILABLE
    assert claim["24"][2] == REPORTED and "random initialisation" in claim["24"][3]
    assert claim["9"][2] == REPORTED and "not in" in claim["9"][3]
    assert "not kept here" in claim["43"][3]
