"""The paper's experiment: several architectures trained on the same data, split and
settings, evaluated and reported side by side (:func:`compare`), and the one-command
reproduction that fetches and prepares the data first (:func:`reproduce`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.config import TrainConfig
from brainmri.data import prepared as data_mod
from brainmri.data import splitfile, splits
from brainmri.data.prepared import PreparedFolder
from brainmri.data.splits import crossing_groups, make_random_split
from brainmri.errors import BrainMRIError
from brainmri.evaluation.evaluate import evaluate_run, read_history
from brainmri.experiments.side_by_side import check_jobs, longest_first, run_side_by_side, say
from brainmri.files import atomic_write_text, read_json
from brainmri.metrics.classification import compute_metrics
from brainmri.metrics.predictions import read_predictions
from brainmri.metrics.records import EvaluationMetrics
from brainmri.models.build import PAPER_ARCHS
from brainmri.render.document import fmt
from brainmri.render.figures import make_figures
from brainmri.reports.comparison import write_comparison_report
from brainmri.rundir import METRICS_JSON, SPLIT_CSV, RunDir

COMPARISON_JSON = "comparison.json"

Log = Callable[[str], None]


# --- running the comparison ----------------------------------------------------------


def _run_is_evaluated(run: RunDir) -> bool:
    if not run.summary.is_file() or not run.metrics.is_file():
        return False
    return bool(read_json(run.summary, {}).get("finished", True))


def external_name(folder: str | Path) -> str:
    """The evaluation name of an external folder: its own name."""
    return Path(folder).resolve().name


def train_and_evaluate(
    config: TrainConfig,
    run_dir: Path,
    n_bootstrap: int,
    progress: bool,
    log: Log,
    externals: Sequence[str | Path] = (),
    gallery: bool = True,
    boxes: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or just evaluate) one run, then evaluate it on each external folder
    and draw its failure gallery; what is already done is skipped, so a rerun resumes."""
    from brainmri.evaluation.gallery import failure_gallery
    from brainmri.training.run import train

    run = RunDir(run_dir)
    label = f"{config.arch}" + (f" fold {config.fold}" if config.fold is not None else "")
    if _run_is_evaluated(run):
        log(f"{label}: finished earlier, skipped ({run_dir})")
        metrics = read_json(run.metrics)
    else:
        if not run.summary.is_file():
            if run.last.is_file():
                log(f"{label}: resuming interrupted training in {run_dir}")
                train(config, run_dir, resume=True, progress=progress)
            else:
                log(f"{label}: training into {run_dir}")
                train(config, run_dir, overwrite=run_dir.exists(), progress=progress)
        log(f"{label}: evaluating")
        metrics = evaluate_run(run_dir, n_bootstrap=n_bootstrap, seed=config.seed, device=config.device,
                               overwrite=True)  # fmt: skip
    log(
        f"{label}: accuracy {metrics['accuracy']:.3f} (95% CI {fmt(metrics['ci']['accuracy'][0])}-"
        f"{fmt(metrics['ci']['accuracy'][1])}), macro F1 {metrics['macro']['f1']:.3f}"
    )
    result: dict[str, Any] = {"metrics": metrics, "external": {}}
    for folder in externals:
        name = external_name(folder)
        done = run.eval_dir(name) / METRICS_JSON
        box_file = (boxes or {}).get(name)
        finished = done.is_file() and read_json(done, {}).get("source", {}).get("path") == str(folder)
        if finished and (box_file is None or "localisation" in read_json(done, {})):
            ext = read_json(done)
        else:
            log(f"{label}: evaluating on {folder}" + (f", explanations scored against {box_file}" if box_file else ""))
            ext = evaluate_run(run_dir, data=folder, name=name, n_bootstrap=n_bootstrap, seed=config.seed,
                               device=config.device, overwrite=True, boxes=box_file)  # fmt: skip
        result["external"][name] = ext
        log(f"{label}: {name} accuracy {ext['accuracy']:.3f} (95% CI {fmt(ext['ci']['accuracy'][0])}-"
            f"{fmt(ext['ci']['accuracy'][1])}), {len(ext['source'].get('training_overlap') or [])} left out as "
            "copies of training images")  # fmt: skip
    if gallery and config.fold is None:
        result["gallery"] = failure_gallery(run_dir, title=label)
    return result


def run_record(run_dir: Path, seed: int | None = None) -> dict[str, Any]:
    """A finished run's metrics and external evaluations, as :func:`compare` returns them."""
    run = RunDir(run_dir)
    res: dict[str, Any] = {"metrics": read_json(run.metrics), "external": {}, "path": str(run_dir)}
    if seed is not None:
        res["seed"] = seed
    for folder in run.evaluations():
        res["external"][folder.name] = read_json(folder / METRICS_JSON)
    return res


def load_results(out: str | Path) -> dict[str, dict[str, Any]]:
    """A finished comparison's results from its records alone (no model), in the shape
    :func:`compare` builds them: single runs, or runs over seeds (those that finished)."""
    out = Path(out)
    record = read_json(out / COMPARISON_JSON, None)
    if record is None:
        raise BrainMRIError(f"{out} is not a comparison folder (no {COMPARISON_JSON})")
    results: dict[str, dict[str, Any]] = {}
    for arch in record.get("archs", []):
        if record.get("seeds"):
            seeds = [int(record["settings"]["config"]["seed"]) + k for k in range(record["seeds"])]
            done = [s for s in seeds if (out / "runs" / arch / f"seed{s}" / METRICS_JSON).is_file()]
            if done:
                results[arch] = {"runs": [run_record(out / "runs" / arch / f"seed{s}", s) for s in done]}
        else:
            results[arch] = run_record(out / "runs" / arch)
    return results


def leakage_counts(split: str | Path) -> dict[str, int]:
    """How far a split lets copies cross: duplicate groups with members on both sides, and
    test images that have a copy (a member of their group) on the training side."""
    rows = splitfile.read_split(split)
    train_groups = {r["group"] for r in rows if r["side"] in ("train", "val")}
    test = [r for r in rows if r["side"] == "test"]
    return {
        "crossing_groups": crossing_groups(rows),
        "test_images": len(test),
        "test_images_with_training_copy": sum(r["group"] in train_groups for r in test),
    }


def _settings(
    prepared: Path, config: TrainConfig, cv: int | None, test_size: float, seeded: bool = False
) -> dict[str, Any]:
    """What must stay the same for a comparison folder to be resumed. The number of seeds is
    not among them: a comparison of 1 seed can be extended to 3 (the runs' layout can't change)."""
    shared = config.to_dict()
    for key in ("arch", "fold", "split", "data", "device", "workers", "tensorboard"):
        shared.pop(key, None)
    manifest = hashlib.sha256((prepared / data_mod.MANIFEST).read_bytes()).hexdigest()
    return {
        "prepared": str(prepared.resolve()),
        "prepared_manifest_sha256": manifest,  # the same folder re-prepared from other data is other data
        "cv": cv,
        "seeded": seeded,
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
    old.setdefault("seeded", False)
    if "val_size" in old.get("config", {}):
        # Settings added since the record was written had their defaults then (val_size marks
        # records whose runs could still choose an epoch on the test side: never resumed).
        for key, default in TrainConfig().to_dict().items():
            if key in settings["config"]:
                old["config"].setdefault(key, default)
    if old != settings:
        if not any((out / "runs").glob("**/checkpoints/*.pt")):
            for stale in (path, out / SPLIT_CSV, *out.glob("folds_k*.csv")):
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
            for k in ("prepared", "prepared_manifest_sha256", "cv", "seeded", "test_size")
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
    seeds: int | None = None,
    boxes: str | Path | None = None,
    finished_only: bool = False,
    jobs: int = 1,
) -> Path:
    """Train and evaluate ``archs`` on one prepared folder with one split and one config,
    then write ``report.md`` and ``report.html`` into ``out``; returns the HTML report.

    Runs live in ``out/runs/<arch>/`` (``out/runs/<arch>/fold<k>/`` with ``cv``, and
    ``out/runs/<arch>/seed<s>/`` with ``seeds``: N training seeds from ``config.seed`` on, on
    the one split, run seed by seed so that an interrupted grid stays balanced). Rerunning
    the same command resumes: evaluated runs are skipped, interrupted ones resumed; a larger
    ``seeds`` extends a finished comparison. ``boxes``: tumour boxes of one external folder
    (the one that holds the file, or the only one); each run's explanations are scored
    against them (:func:`brainmri.evaluation.evaluate.evaluate_run`).

    ``finished_only`` trains nothing: the report covers the runs that have finished (trained
    and evaluated) and says which are left out, so that a long grid can be reported while its
    last runs are still training elsewhere.

    ``jobs`` runs that many trainings at once on a CPU machine, each process with an equal share
    of the cores and the largest architectures first (:mod:`brainmri.experiments.side_by_side`);
    each run is the same as alone but for the threads it computes with, which its
    ``environment.json`` records. The lines of runs side by side are printed by their
    processes, not passed to ``log``.
    """
    prepared, out = Path(prepared), Path(out)
    archs, externals = _check_inputs(prepared, archs, cv, config, externals, seeds)
    jobs = check_jobs(jobs, config.device)
    box_map = boxes_for(boxes, externals)
    from brainmri.provenance import provenance
    from brainmri.training.records import validate_config

    folder = validate_config(config.replace(data=str(prepared)))  # before the settings are recorded in OUT
    settings = _settings(prepared, config, cv, config.test_size, seeded=seeds is not None)
    _check_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)

    split = _comparison_split(folder, out, config, cv)
    record = {"settings": settings, "archs": archs, "split": split.name, "meta": meta or {}, "seeds": seeds,
              "provenance": provenance()}  # fmt: skip
    atomic_write_text(out / COMPARISON_JSON, json.dumps(record, indent=2) + "\n")

    base = config.replace(data=str(prepared.resolve()), split=str(split.resolve()))
    started = time.perf_counter()
    if seeds is not None:
        results = _compare_seeds(out, base, archs, seeds, n_bootstrap, progress, log, externals, box_map,
                                 finished_only, jobs)  # fmt: skip
    else:
        results = _compare_single(out, base, archs, cv, n_bootstrap, progress, log, externals, box_map,
                                  finished_only, jobs)  # fmt: skip
    if not results:
        raise BrainMRIError(f"no run in {out} has finished: nothing to report (--finished-only trains nothing)")
    log(f"all runs done in {time.perf_counter() - started:.0f} s")
    write_external_groups(out, externals)
    leakage = leakage_counts(split) if not cv else None
    atomic_write_text(out / "results.json", json.dumps(_summary(results, leakage), indent=2) + "\n")
    _, html_path = write_comparison_report(out, results, cv=cv, meta=meta or {}, leakage=leakage)
    return html_path


def boxes_for(boxes: str | Path | None, externals: Sequence[Path]) -> dict[str, Path]:
    """external name -> its box file: the folder that holds ``boxes``, or the only external."""
    if boxes is None:
        return {}
    boxes = Path(boxes)
    if not boxes.is_file():
        raise BrainMRIError(f"box file not found: {boxes}")
    if not externals:
        raise BrainMRIError("--boxes scores explanations on an external folder: give it with --external DIR")
    holder = [e for e in externals if boxes.resolve().parent == e.resolve()]
    if holder or len(externals) == 1:
        return {external_name((holder or externals)[0]): boxes}
    raise BrainMRIError(f"--boxes {boxes} lies in none of the --external folders; which one does it describe?")


def write_external_groups(out: Path, externals: Sequence[Path]) -> None:
    """Each external folder's near-duplicate groups beside the records
    (``external-groups-<name>.csv``), so that its CIs can treat copies as one: what the
    report's cluster bootstrap reads."""
    from brainmri.evaluation.external import near_duplicate_groups, write_groups

    for folder in externals:
        path = out / f"external-groups-{external_name(folder)}.csv"
        if not path.is_file():
            write_groups(near_duplicate_groups(folder), path)


def seed_values(config: TrainConfig, seeds: int) -> list[int]:
    """The training seeds of a repeated comparison: ``config.seed``, ``config.seed + 1``, ..."""
    return [config.seed + k for k in range(seeds)]


def _left_out(run_dir: Path, finished_only: bool, log: Log) -> bool:
    """With ``finished_only``, whether ``run_dir`` is left out of the report (not yet trained
    and evaluated), saying so."""
    if finished_only and not _run_is_evaluated(RunDir(run_dir)):
        log(f"{run_dir}: not finished, left out of this report (--finished-only)")
        return True
    return False


def _compare_seeds(
    out, base, archs, seeds, n_bootstrap, progress, log, externals, boxes, finished_only=False, jobs=1
) -> dict[str, dict[str, Any]]:
    """Every architecture at every seed, seed by seed, on the one split; the results of each
    architecture hold its runs in seed order."""
    results: dict[str, dict[str, Any]] = {arch: {"runs": []} for arch in archs}
    keys, calls = [], []
    order = longest_first(archs) if jobs > 1 else archs
    for seed in seed_values(base, seeds):
        for arch in order:
            run_dir = out / "runs" / arch / f"seed{seed}"
            if _left_out(run_dir, finished_only, log):
                continue
            keys.append((arch, seed, run_dir))
            calls.append(run_call(base.replace(arch=arch, seed=seed), run_dir, n_bootstrap, progress, log, jobs,
                                   externals=externals, gallery=False, boxes=boxes))  # fmt: skip
    for (arch, seed, run_dir), done in zip(keys, run_side_by_side(train_and_evaluate, calls, jobs), strict=True):
        results[arch]["runs"].append({"seed": seed, "path": str(run_dir), **done})
    return {arch: res for arch, res in results.items() if res["runs"]}


def _compare_single(
    out, base, archs, cv, n_bootstrap, progress, log, externals, boxes, finished_only=False, jobs=1
) -> dict[str, dict[str, Any]]:
    kept, keys, calls = [], [], []
    for arch in longest_first(archs) if jobs > 1 else archs:
        folders = [out / "runs" / arch / f"fold{k}" for k in range(cv)] if cv else [out / "runs" / arch]
        if any([_left_out(f, finished_only, log) for f in folders]):
            continue
        kept.append(arch)
        for k, run_dir in enumerate(folders):
            keys.append((arch, k if cv else None))
            if cv:
                calls.append(run_call(base.replace(arch=arch, fold=k), run_dir, n_bootstrap, progress, log, jobs))
            else:
                calls.append(run_call(base.replace(arch=arch), run_dir, n_bootstrap, progress, log, jobs,
                                       externals=externals, boxes=boxes))  # fmt: skip
    done = dict(zip(keys, run_side_by_side(train_and_evaluate, calls, jobs), strict=True))
    results: dict[str, dict[str, Any]] = {}
    for arch in [a for a in archs if a in kept]:
        if cv:
            folds = [done[(arch, k)]["metrics"] for k in range(cv)]
            results[arch] = {"folds": folds, "pooled": _pool_folds(out / "runs" / arch, cv, n_bootstrap, base.seed)}
        else:
            results[arch] = done[(arch, None)]
    return results


def run_call(
    config: TrainConfig, run_dir: Path, n_bootstrap: int, progress: bool, log: Log, jobs: int, **more: Any
) -> dict[str, Any]:
    """The arguments of one :func:`train_and_evaluate` call; with runs side by side each process
    prints its own lines, without progress bars (they would overwrite each other)."""
    side_by_side = jobs > 1
    return dict(config=config, run_dir=run_dir, n_bootstrap=n_bootstrap, progress=progress and not side_by_side,
                log=say if side_by_side else log, **more)  # fmt: skip


def _check_inputs(
    prepared: Path,
    archs: Sequence[str],
    cv: int | None,
    config: TrainConfig,
    externals: Sequence[str | Path],
    seeds: int | None = None,
) -> tuple[list[str], list[Path]]:
    """Every check of ``compare``'s arguments, before anything is written: a bad flag is one
    line at the start, not a traceback an hour into the first architecture."""
    if not (prepared / data_mod.PREPARE_JSON).is_file():
        raise BrainMRIError(
            f"{prepared} is not a finished prepared folder (no {data_mod.PREPARE_JSON}); run prepare first"
        )
    archs = list(dict.fromkeys(archs))
    if not archs:
        raise BrainMRIError("no architectures to compare")
    from brainmri.models.build import available_archs

    unknown = [a for a in archs if a not in available_archs()]
    if unknown:
        raise BrainMRIError(f"unknown architecture(s) {', '.join(unknown)}; e.g. {', '.join(PAPER_ARCHS)}")
    if cv is not None and cv < 2:
        raise BrainMRIError(f"--cv must be at least 2, got {cv}")
    if seeds is not None and seeds < 1:
        raise BrainMRIError(f"--seeds must be at least 1, got {seeds}")
    if seeds is not None and cv:
        raise BrainMRIError("--seeds repeats training on one split, --cv repeats it over folds: choose one")
    if cv and config.split_policy == "random":
        raise BrainMRIError(
            "--split-policy random is a single 80/20 split (the paper's); it does not combine with --cv"
        )
    if cv:  # folds the data cannot fill: one line now, before OUT is made
        splits.check_folds(data_mod.kept_rows(prepared, config.groups, config.groups_missing), cv, "--cv")
    folders = [Path(e) for e in externals]
    for folder in folders:
        if not folder.is_dir():
            raise BrainMRIError(f"external folder not found: {folder}")
    if len({external_name(e) for e in folders}) < len(folders):
        raise BrainMRIError("two --external folders have the same name; their evaluations would collide")
    return archs, folders


def _comparison_split(prepared: PreparedFolder, out: Path, config: TrainConfig, cv: int | None) -> Path:
    """The one split (or fold file) shared by every architecture, drawn once and kept in
    the comparison folder so that a resumed comparison uses the same sides (``prepared``: the
    prepared folder as :func:`brainmri.training.records.validate_config` opened it)."""
    split = out / (f"folds_k{cv}.csv" if cv else SPLIT_CSV)
    if not split.is_file():
        groups, missing = config.groups, config.groups_missing
        if cv:
            rows = splits.make_kfold(prepared, cv, config.seed, groups=groups, groups_missing=missing, flag="--cv")
        elif config.split_policy == "random":
            rows = make_random_split(prepared, config.test_size, config.seed)
        else:
            rows = splits.make_split(prepared, config.test_size, config.seed, groups=groups, groups_missing=missing)
        splitfile.write_split(rows, split)
    return split


def _summary(results: dict[str, dict[str, Any]], leakage: dict[str, int] | None) -> dict[str, Any]:
    """The comparison's headline numbers in one JSON: held-out and external accuracy with CIs."""

    def headline(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": m["n"],
            "accuracy": m["accuracy"],
            "accuracy_ci95": m["ci"]["accuracy"],
            "macro_f1": m["macro"]["f1"],
            "macro_f1_ci95": m["ci"]["macro_f1"],
            "sensitivity": {c: v["recall"] for c, v in m["per_class"].items()},
        }

    out: dict[str, Any] = {"leakage": leakage, "archs": {}}
    for arch, res in results.items():
        if "runs" in res:  # repeated seeds: each run's headline, then mean and SD across runs
            runs = [
                {
                    "seed": r["seed"],
                    "test": headline(r["metrics"]),
                    "training_seconds": (r["metrics"].get("run") or {}).get("training_seconds"),
                    "external": {name: headline(e) for name, e in r.get("external", {}).items()},
                }
                for r in res["runs"]
            ]
            accs = [r["test"]["accuracy"] for r in runs]
            out["archs"][arch] = {
                "runs": runs,
                "test_accuracy_mean": float(np.mean(accs)),
                "test_accuracy_sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
            }
            continue
        m = res.get("metrics") or res["pooled"]
        entry = {"held_out": headline(m), "training_seconds": (m.get("run") or {}).get("training_seconds")}
        entry["external"] = {name: headline(e) for name, e in res.get("external", {}).items()}
        out["archs"][arch] = entry
    return out


def _pool_folds(arch_dir: Path, cv: int, n_bootstrap: int, seed: int) -> EvaluationMetrics:
    """Metrics and figures over the out-of-fold predictions of all folds (each image once)."""
    ys, probs, histories = [], [], []
    classes: list[str] = []
    for k in range(cv):
        y, p, _, classes = read_predictions(RunDir(arch_dir / f"fold{k}").predictions)
        ys.append(y)
        probs.append(p)
        histories.append(read_history(arch_dir / f"fold{k}"))
    y_true, proba = np.concatenate(ys), np.concatenate(probs)
    metrics = EvaluationMetrics(**compute_metrics(y_true, proba, classes, n_bootstrap=n_bootstrap, seed=seed))
    epochs = min(len(h) for h in histories)
    mean_history = [
        {
            key: float(np.mean([h[i][key] for h in histories]))
            for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
            if all(key in h[i] for h in histories)  # no validation side: no val columns
        }
        for i in range(epochs)
    ]
    figs = make_figures(
        arch_dir / "pooled", metrics, y_true, proba, mean_history, title=f"{arch_dir.name}, {cv} folds pooled"
    )
    metrics["figures"] = {k: str(v) for k, v in figs.items()}
    atomic_write_text(arch_dir / "pooled" / METRICS_JSON, json.dumps(metrics, indent=2) + "\n")
    return metrics
