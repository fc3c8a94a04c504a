"""The committed results hold up: every link in their reports resolves, no figure is heavy,
no checkpoint is committed, every run records the code it came from, and the README's tables
are exactly what ``brainmri results table`` makes of the committed records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from brainmri.experiments.tables import table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: README blocks generated from records: <!-- table NAME DIR --> ... <!-- /table -->
BLOCK = re.compile(r"<!-- table (\w+) (\S+) -->\n((?:(?!<!-- table ).)*?)<!-- /table -->", re.S)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(md):
    broken = []
    for target in LINK.findall(md.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor
        path = (md.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert broken == []


def test_committed_results_are_small_records_without_weights():
    files = [p for p in RESULTS.rglob("*") if p.is_file()]
    assert files
    heavy = [p for p in files if p.suffix == ".png" and p.stat().st_size > 200_000]
    weights = [p for p in files if p.suffix in {".pt", ".pth", ".safetensors", ".onnx"}]
    assert heavy == [] and weights == []


def test_every_committed_run_records_its_code_and_its_evaluation():
    runs = [p.parent for p in RESULTS.rglob("environment.json")]
    assert runs
    for run in runs:
        env = json.loads((run / "environment.json").read_text())
        if "code" not in env:  # the ablation's runs predate provenance records: README says so
            assert "ablation" in run.parts, run
            continue
        assert env["code"]["commit"] and len(env["code"]["commit"]) == 40, run
        assert env["code"]["dirty"] is False or list(run.glob("source-*.diff")), run
        if (run / "metrics.json").is_file():  # an evaluated run keeps what its numbers come from
            for name in ("predictions.csv", "history.csv", "train.log", "config.json", "split.csv"):
                assert (run / name).is_file(), (run, name)


def test_the_readme_tables_are_generated_from_the_records():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = BLOCK.findall(readme)
    assert blocks, "README.md has no generated result tables"
    for name, folder, text in blocks:
        assert text.strip() == table(ROOT / folder, name).strip(), f"README table {name} of {folder} is stale"
