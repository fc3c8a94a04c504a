"""The README's result tables, generated from the records of a results folder alone (metrics,
predictions, splits; no model), so that every number quoted can be recomputed:

    brainmri results table docs/results/depth

A comparison folder (``comparison.json``) gives the tables ``depth``, ``pairs``,
``calibration`` and ``external``; a leakage study (``leakage.json``) ``leakage``; an
explanation score (``localisation.json``) ``localisation``. ``tests/test_results.py`` checks
that each table in README.md equals what this module makes of the committed records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.errors import BrainMRIError
from brainmri.evaluation.external import breakdown, read_groups_csv
from brainmri.experiments.compare import load_results
from brainmri.experiments.leakage import findings
from brainmri.files import read_json
from brainmri.metrics.calibration import calibration_scores, fit_temperature
from brainmri.metrics.paired import mean_sd
from brainmri.metrics.predictions import read_predictions
from brainmri.render.document import markdown_table
from brainmri.reports.paper import PUBLISHED
from brainmri.reports.repeats import pair_differences, pretty, verdict
from brainmri.rundir import PREDICTIONS_CSV, RunDir

#: The file, beside a comparison's records, that names each external image's near-duplicate
#: group (for cluster bootstraps): ``external-groups-<name>.csv``.
GROUPS_CSV = "external-groups-{name}.csv"


def _pm(values: list[float | None], digits: int = 3) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mean, sd = mean_sd(vals)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def _ci(entry: dict[str, Any], digits: int = 3) -> str:
    v, (lo, hi) = entry.get("value"), entry.get("ci95") or (None, None)
    if v is None:
        return "–"
    return f"{v:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})" if lo is not None else f"{v:.{digits}f}"


def _externals(results: dict[str, dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(n for res in results.values() for r in res["runs"] for n in r.get("external", {})))


def _repeated(folder: Path) -> dict[str, dict[str, Any]]:
    results = load_results(folder)
    if not results or not all("runs" in r for r in results.values()):
        raise BrainMRIError(f"{folder} is not a comparison over seeds (compare --seeds N)")
    for res in results.values():  # the published folder's own paths, wherever it now lives
        for r in res["runs"]:
            r["path"] = str(folder / "runs" / Path(r["path"]).parent.name / Path(r["path"]).name)
    return results


def _groups(folder: Path, name: str) -> dict[str, str] | None:
    path = folder / GROUPS_CSV.format(name=name)
    return read_groups_csv(path) if path.is_file() else None


def depth_table(folder: Path) -> str:
    """Each architecture over its seeds: test and external accuracy, macro F1, time."""
    results = _repeated(folder)
    externals = _externals(results)
    header = ["Model", "Runs", "Test accuracy", "Test macro F1"]
    header += [f"External accuracy ({n})" for n in externals]
    header += ["Training time (min)", "Median epoch (s)", "Images/s (median epoch)", "Paper (ImageNet, random split)"]
    rows = []
    for arch, res in results.items():
        runs = res["runs"]
        ms = [r["metrics"] for r in runs]
        summaries = [read_json(RunDir(r["path"]).summary, {}) for r in runs]
        pub = PUBLISHED.get(arch, {})
        rows.append(
            [pretty(arch), str(len(runs)), _pm([m["accuracy"] for m in ms]), _pm([m["macro"]["f1"] for m in ms])]
            + [_pm([r["external"][n]["accuracy"] for r in runs if n in r["external"]]) for n in externals]
            + [
                _pm([s.get("total_seconds", 0) / 60 for s in summaries], 1),
                _pm([float(np.median(s["epoch_seconds"])) if s.get("epoch_seconds") else None for s in summaries], 1),
                _pm([_median_rate(r["path"]) for r in runs], 1),
                f"{pub['accuracy']:.2f}, {pub['training_seconds']:.1f} s" if pub else "–",
            ]
        )
    return markdown_table(header, rows)


def _median_rate(run_dir: str | Path) -> float | None:
    """Training images per second in the run's median epoch: robust to the epochs that shared
    the machine with other work (the wall-clock time is not)."""
    from brainmri.evaluation.evaluate import read_history

    rates = [r["images_per_second"] for r in read_history(run_dir) if "images_per_second" in r]
    return float(np.median(rates)) if rates else None


def pairs_table(folder: Path) -> str:
    """Paired differences of test and external accuracy, and the verdicts."""
    results = _repeated(folder)
    header = ["Difference", "Where", "Runs", "Mean", "95% CI, corrected t-test", "95% CI, paired bootstrap"]
    rows, verdicts = [], []
    for name in [None, *_externals(results)]:
        pairs = pair_differences(results, name, _groups(folder, name) if name else None)
        where = "test" if name is None else name
        verdicts.append(verdict(pairs, "the test side" if name is None else name))
        for p in pairs:
            t, b = p["t_test"], p["bootstrap"]
            rows.append(
                [
                    f"{pretty(p['a'])} − {pretty(p['b'])}",
                    where,
                    str(len(p["seeds"])),
                    f"{t['mean']:+.3f}",
                    f"{t['low']:+.3f} to {t['high']:+.3f}" if t["low"] is not None else "–",
                    f"{b['low']:+.3f} to {b['high']:+.3f}",
                ]  # fmt: skip
            )
    return markdown_table(header, rows) + "\n\n" + "\n".join(verdicts)


def _run_calibration(run: dict[str, Any], name: str | None, temperature: float) -> dict[str, Any]:
    """NLL, Brier and ECE before and after ``temperature`` on the run's test side (``name``
    None) or one external folder, recomputed from its predictions."""
    rd = RunDir(run["path"])
    y, p, _, _ = read_predictions((rd.eval_dir(name) / PREDICTIONS_CSV) if name else rd.predictions)
    return calibration_scores(p, y, temperature, n_bootstrap=1000)


def calibration_table(folder: Path) -> str:
    """Temperature scaling fitted on each run's validation side: NLL, Brier and ECE before and
    after on the test side and the external folders, for each architecture's first run (95%
    bootstrap CIs), with the temperature of every run."""
    results = _repeated(folder)
    header = ["Model", "Temperature (each run)", "Where (first run)", "NLL before → after", "Brier before → after",
              "ECE before → after"]  # fmt: skip
    rows = []
    for arch, res in results.items():
        first = res["runs"][0]
        temps = [_run_temperature(r) for r in res["runs"]]  # each fitted once, from the records
        if temps[0] is None:  # the first run has no validation side: nothing was calibrated
            continue
        temp_text = ", ".join(f"{t:.2f}" for t in temps if t is not None)
        for name in [None, *first.get("external", {})]:
            c = _run_calibration(first, name, temps[0])
            cells = [f"{_ci(c['before'][k])} → {_ci(c['after'][k])}" for k in ("nll", "brier", "ece")]
            rows.append([pretty(arch), temp_text, f"{name or 'test'} (seed {first['seed']})", *cells])
    return markdown_table(header, rows)


def _run_temperature(run: dict[str, Any]) -> float | None:
    """The temperature fitted on the run's validation predictions, as training fits it; None
    without a validation side."""
    rd = RunDir(run["path"])
    if not rd.val_predictions.is_file():
        return None
    y, p, _, _ = read_predictions(rd.val_predictions)
    return fit_temperature(p, y)


def external_table(folder: Path) -> str:
    """The external figures that source style cannot inflate, each model's runs averaged per
    image, with cluster-bootstrap CIs over the folder's near-duplicate groups."""
    results = _repeated(folder)
    out = []
    for name in _externals(results):
        groups = _groups(folder, name)
        header = ["Model", "Accuracy", "Tumour-only 3-class accuracy", "Tumours called a tumour",
                  "Br35H normals right (specificity)", "Tumours called normal (rate)",
                  "Tumours called normal (count)"]  # fmt: skip
        rows = []
        for arch, res in results.items():
            runs = [r for r in res["runs"] if name in r.get("external", {})]
            loaded = [read_predictions(RunDir(r["path"]).eval_dir(name) / PREDICTIONS_CSV) for r in runs]
            paths, classes = loaded[0][2], loaded[0][3]
            if any(lp[2] != paths for lp in loaded):
                raise BrainMRIError(f"the runs of {arch} were scored on different images of {name}")
            b = breakdown([(lp[0], lp[1]) for lp in loaded], classes, paths, groups)
            called = b["tumours called normal"]
            rows.append(
                [
                    pretty(arch),
                    _ci(b["accuracy"]),
                    _ci(b["tumour-only 3-class accuracy"]),
                    _ci(b["figshare tumours: sensitivity (a tumour called a tumour)"]),
                    _ci(b["Br35H normals: specificity"]),
                    _ci(called),
                    f"{called['count_mean']:.1f} of {called['n']}",
                ]  # fmt: skip
            )
        clustered = "over its near-duplicate groups" if groups else "over its images (no group file)"
        out.append(f"{name}: mean over each model's runs, 95% cluster bootstrap {clustered}.\n\n")
        out[-1] += markdown_table(header, rows)
    return "\n\n".join(out)


def leakage_table(folder: Path) -> str:
    study = read_json(folder / "leakage.json", None)
    if study is None:
        raise BrainMRIError(f"{folder} holds no leakage.json")
    externals = list(study["external_difference"])
    header = ["Seed", "Test images (with a copy in the random arm)", "Test: group / random"]
    header += [f"{n}: group / random" for n in externals]
    rows = [
        [str(s["seed"]), f"{s['counts']['test']} ({s['test_with_copy']})",
         f"{s['group']['test_accuracy']:.3f} / {s['random']['test_accuracy']:.3f}"]
        + [f"{s['group']['external'][n]:.3f} / {s['random']['external'][n]:.3f}" for n in externals]
        for s in study["per_seed"]
    ]  # fmt: skip
    return markdown_table(header, rows) + "\n\n" + "\n".join(findings(study))


def localisation_table(folder: Path) -> str:
    record = read_json(folder / "localisation.json", None)
    if record is None:
        raise BrainMRIError(f"{folder} holds no localisation.json")
    from brainmri.evaluation.explanation_scores import method_table

    header, rows = method_table(record["tables"]["report"])
    return (
        f"Report half ({record['halves']['report']} slices), maps of the predicted class; chosen on the select "
        f"half: **{record['chosen']}**.\n\n" + markdown_table(header, rows) + "\n\n" + localisation_findings(record)
    )


#: The explanation goal: the chosen map's pointing-game hit rate on the report half.
POINTING_GOAL = 0.80


def localisation_findings(record: dict[str, Any]) -> str:
    """The goal's verdict and the occlusion test, in sentences written from the record, so that
    the prose beside the table cannot drift from it."""
    tol = f"pointing_{record['tolerance']:g}"
    chosen = record["chosen_on_report"][tol]
    centre = record["tables"]["report"]["centre prior | -"][tol]
    clear = chosen["low"] > centre["high"]
    met = chosen["mean"] >= POINTING_GOAL and clear
    lines = [
        f"Goal: a pointing-game hit rate of at least {POINTING_GOAL:.2f} (tolerance {record['tolerance']:g}) with "
        f"its CI clear of the centre prior's. **{'Met' if met else 'Not met'}**: {record['chosen']} "
        f"{_loc(chosen)} against the centre prior's {_loc(centre)}" + ("" if clear else ", whose CI it overlaps") + "."
    ]
    occ = record.get("occlusion")
    if occ:
        lines.append(
            f"Occlusion of all {occ['drop_box']['n']} boxed slices with {occ['fill']}: the true class's probability "
            f"drops by {_loc(occ['drop_box'])} when the tumour's box is covered, and by {_loc(occ['drop_control'])} "
            f"when a same-sized region elsewhere is ({occ['control']}); difference {_loc(occ['difference'])}."
        )
    if record.get("seconds") is not None:
        lines.append(f"Scoring took {record['seconds']:.0f} s.")
    return "\n".join(lines)


def change_table(folder: Path) -> str:
    """A training-side change beside its baseline (``change.json``: the two run folders, what
    changed, the external folder): accuracy and where the model looks, side by side."""
    spec = read_json(folder / "change.json", None)
    if spec is None:
        raise BrainMRIError(f"{folder} holds no change.json")
    name = spec["external"]
    header = ["Run", "Test accuracy", f"{name} accuracy", "Tumour-only 3-class accuracy",
              "Pointing game, chosen map (report half)", "Pointing game, gradcam@layer4", "Energy in box (chosen)",
              "Occlusion: drop box − drop elsewhere"]  # fmt: skip
    rows = []
    for label, rel in (("baseline", spec["baseline"]), (spec["change"], spec["changed"])):
        run = RunDir(folder / rel)
        test, ext = read_json(run.metrics), read_json(run.eval_dir(name) / "metrics.json")
        loc = read_json(run.eval_dir(name) / "localisation" / "localisation.json")
        y, p, paths, classes = read_predictions(run.eval_dir(name) / PREDICTIONS_CSV)
        three = breakdown([(y, p)], classes, paths, _groups(folder, name))["tumour-only 3-class accuracy"]
        report = loc["tables"]["report"]
        chosen = report[f"{loc['chosen']} | predicted"]
        g4 = report["gradcam@layer4 | predicted"]
        pg = f"pointing_{loc['tolerance']:g}"
        occ = loc["occlusion"]["difference"]
        rows.append(
            [
                label,
                _ci({"value": test["accuracy"], "ci95": test["ci"]["accuracy"]}),
                _ci({"value": ext["accuracy"], "ci95": ext["ci"]["accuracy"]}),
                _ci(three),
                f"{loc['chosen']}: {_loc(chosen[pg])}",
                _loc(g4[pg]),
                _loc(chosen["energy"]),
                _loc(occ),
            ]  # fmt: skip
        )
    return markdown_table(header, rows)


def _loc(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} ({s['low']:.3f}–{s['high']:.3f})" if s.get("mean") is not None else "–"


TABLES: dict[str, Callable[[Path], str]] = {
    "depth": depth_table,
    "pairs": pairs_table,
    "calibration": calibration_table,
    "external": external_table,
    "leakage": leakage_table,
    "localisation": localisation_table,
    "change": change_table,
}


def available(folder: str | Path) -> list[str]:
    folder = Path(folder)
    if (folder / "comparison.json").is_file():
        return ["depth", "pairs", "calibration", "external"]
    if (folder / "leakage.json").is_file():
        return ["leakage"]
    if (folder / "localisation.json").is_file():
        return ["localisation"]
    if (folder / "change.json").is_file():
        return ["change"]
    raise BrainMRIError(f"{folder} holds no results brainmri can tabulate (comparison, leakage or localisation)")


def table(folder: str | Path, name: str) -> str:
    if name not in TABLES:
        raise BrainMRIError(f"unknown table {name!r}; choose one of {', '.join(TABLES)}")
    return TABLES[name](Path(folder))
