"""What a comparison's runs recorded, gathered once for the reporting checklist
(:mod:`brainmri.reports.checklist.tables`): the first run's config, environment, split and model card, the
prepared data's ``prepare.json``, and every architecture's metrics, external evaluations,
failure gallery and training summary. Also the answer type every checklist item gets, and
the few phrasings the answers share (counts per class, CIs), so that they read alike.

Each record may be missing (a committed results folder keeps no checkpoints; an older run has
no temperature): a missing record is ``None`` or empty here, and the checklist says so,
rather than failing or guessing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from brainmri.data import prepared as data_mod
from brainmri.data import splitfile
from brainmri.errors import BrainMRIError
from brainmri.evaluation.gallery import FAILURES_CSV, FAILURES_PNG
from brainmri.files import file_sha256, read_json
from brainmri.rundir import RunDir


@dataclass
class Records:
    """One comparison's records, as the checklist reads them."""

    out: Path
    archs: list[str]
    run: RunDir  # the first architecture's run (its first fold or seed): the settings' record
    config: dict[str, Any]
    env: dict[str, Any]
    prep: dict[str, Any]
    prepared: Path
    manifest_sha256: str | None
    card: dict[str, Any] | None  # None: no readable checkpoints/best.pt
    card_note: str
    counts: dict[str, dict[str, int]]  # side -> class -> images, from the first run's split.csv
    metrics: dict[str, dict[str, Any]]  # arch -> test-side metrics (pooled over folds with cv)
    external: dict[str, dict[str, dict[str, Any]]]  # arch -> folder name -> metrics
    galleries: dict[str, dict[str, Any]]
    summaries: dict[str, dict[str, Any]]
    models_trained: int
    leakage: dict[str, Any] | None
    split_by: str
    cv: bool
    repeated: bool
    title: str = ""
    preset: str | None = None
    runs: dict[str, str] = field(default_factory=dict)  # arch -> its run folder, as the report names it

    @property
    def externals(self) -> list[str]:
        return sorted({n for ext in self.external.values() for n in ext})

    @property
    def results_where(self) -> str:
        return "Results over repeated runs" if self.repeated else "Results"

    @property
    def uncertainty_where(self) -> str:
        return "Paired differences" if self.repeated else "Uncertainty and calibration"

    def rel(self, path: str | Path) -> str:
        """A path as the report names it: relative to the comparison folder where it lies inside."""
        try:
            return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError:
            return str(path)

    def first_external(self, name: str) -> dict[str, Any]:
        """The metrics of the first architecture evaluated on the external folder ``name``."""
        return next(ext[name] for ext in self.external.values() if name in ext)

    def external_where(self, name: str) -> str:
        if self.repeated:
            return f"Results over repeated runs ({name} column); Paired differences: the external folder {name}"
        return f"External validation: {name}"


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def _run_dir(out: Path, arch: str, res: dict[str, Any]) -> RunDir:
    run = RunDir(res["path"]) if res.get("path") else RunDir(out / "runs" / arch)
    if not run.config.is_file() and RunDir(run.path / "fold0").config.is_file():  # cross-validation
        run = RunDir(run.path / "fold0")
    return run


def _card(run: RunDir) -> tuple[dict[str, Any] | None, str]:
    """The first run's model card, or None with the reason (results are committed without
    checkpoints, so the card is often not there)."""
    if not run.best.is_file():
        return None, f"{run.best.name} is not in {run.checkpoints} (checkpoints are not kept with published records)"
    from brainmri.models.checkpoint import read_checkpoint

    try:
        return read_checkpoint(run.best)["card"], ""
    except (BrainMRIError, KeyError) as exc:
        return None, f"the model card of {run.best} could not be read ({exc})"


def _counts(split: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    if split.is_file():
        for r in splitfile.read_split(split):
            side = counts.setdefault(r.get("side") or "train", {})
            side[r["label"]] = side.get(r["label"], 0) + 1
    return counts


def _gallery(res: dict[str, Any], run: RunDir) -> dict[str, Any] | None:
    """The failure gallery the comparison drew, or the one its run folder still holds."""
    if res.get("gallery"):
        return res["gallery"]
    listed = run.figures / FAILURES_CSV
    if not listed.is_file():
        return None
    with listed.open(newline="", encoding="utf-8") as fh:
        n = sum(1 for _ in csv.DictReader(fh))
    figure = run.figures / FAILURES_PNG
    return {"misclassified": n, "csv": str(listed), "figure": str(figure) if figure.is_file() else None}


def _models_trained(out: Path, archs: list[str], runs: dict[str, RunDir]) -> int:
    """Every trained run of the comparison: its seeds or folds, one run per architecture otherwise."""
    total = 0
    for arch in archs:
        folder = out / "runs" / arch
        nested = [p for p in folder.iterdir() if RunDir(p).config.is_file()] if folder.is_dir() else []
        total += len(nested) or int(runs[arch].config.is_file())
    return total


def gather(
    out: Path,
    results: dict[str, dict[str, Any]],
    leakage: dict[str, Any] | None,
    split_by: str,
    repeated: bool = False,
    title: str = "",
    preset: str | None = None,
) -> Records:
    """Read every record the checklist needs, once."""
    archs = list(results)
    runs = {a: _run_dir(out, a, r) for a, r in results.items()}
    first = runs[archs[0]]
    config = read_json(first.config, {})
    prepared = Path(config.get("data") or "")
    card, card_note = _card(first)
    records = Records(
        out=out,
        archs=archs,
        run=first,
        config=config,
        env=read_json(first.environment, {}),
        prep=read_json(prepared / data_mod.PREPARE_JSON, {}) if config.get("data") else {},
        prepared=prepared,
        manifest_sha256=_sha256(prepared / data_mod.MANIFEST) if config.get("data") else None,
        card=card,
        card_note=card_note,
        counts=_counts(first.split),
        metrics={a: r.get("metrics") or r.get("pooled") or {} for a, r in results.items()},
        external={a: dict(r.get("external") or {}) for a, r in results.items()},
        galleries={a: g for a, r in results.items() if (g := _gallery(r, runs[a]))},
        summaries={a: read_json(runs[a].summary, {}) for a in archs},
        models_trained=_models_trained(out, archs, runs),
        leakage=leakage,
        split_by=split_by,
        cv=any("pooled" in r for r in results.values()),
        repeated=repeated,
        title=title,
        preset=preset,
    )
    records.runs = {a: records.rel(runs[a].path) for a in archs}
    return records


# --- answers -------------------------------------------------------------------------------------

REPORTED = "reported"
NOT_AVAILABLE = "not available"
NOT_APPLICABLE = "not applicable"
STATUSES = (REPORTED, NOT_AVAILABLE, NOT_APPLICABLE)

#: Headings of the comparison report that the answers point to.
SETTINGS = "Settings"
LIMITS = "What this run cannot claim"
NOTICE_SECTION = "Not for clinical use"
HERE = "this table"
HEADER = ["No.", "Item", "Status", "What this study records, or why not", "Where"]


class Answer(NamedTuple):
    status: str
    text: str  # the value (reported) or the reason (not available, not applicable)
    where: str = ""


def reported(text: str, where: str) -> Answer:
    return Answer(REPORTED, text, where)


def not_available(reason: str) -> Answer:
    return Answer(NOT_AVAILABLE, reason)


def not_applicable(reason: str) -> Answer:
    return Answer(NOT_APPLICABLE, reason)


# --- formatting ---------------------------------------------------------------------------------


def short_label(label: str) -> str:
    return label.removesuffix("_tumor")


def per_class(counts: dict[str, int]) -> str:
    return ", ".join(f"{short_label(k)} {v}" for k, v in sorted(counts.items()))


def sides_text(counts: dict[str, dict[str, int]]) -> str:
    known = ("train", "val", "test")
    order = [s for s in known if s in counts] + [s for s in counts if s not in known]
    return "; ".join(f"{s} {sum(counts[s].values())} ({per_class(counts[s])})" for s in order)


def ci_text(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"95% CI {ci[0]:.3f}–{ci[1]:.3f}" if ci and ci[0] is not None else "no CI"


def accuracy_text(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.3f} ({ci_text(m, 'accuracy')})"


def removed_text(prep: dict[str, Any]) -> str:
    removed = prep.get("removed") or {}
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in removed.items()) or "nothing"


def prepare_where(r: Records) -> str:
    return "prepare.json of the prepared data"


def config_where(r: Records) -> str:
    return f"{r.rel(r.run.path)}/config.json"


def external_path(r: Records, name: str) -> str:
    return str((r.first_external(name).get("source") or {}).get("path", "?"))


def no_prepare(r: Records) -> Answer:
    return not_available(f"prepare.json of the prepared data ({r.prepared or 'not recorded'}) is not readable here")
