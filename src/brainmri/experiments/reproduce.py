"""``brainmri reproduce``: the paper's experiment in one command, from a dataset folder (or the
download) to the report, with the presets paper, scratch and quick."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainmri.config import TrainConfig
from brainmri.data import prepare as preparation
from brainmri.data import prepared as data_mod
from brainmri.errors import BrainMRIError
from brainmri.experiments.compare import COMPARISON_JSON, Log, compare, leakage_counts, load_results
from brainmri.files import read_json
from brainmri.models.build import PAPER_ARCHS
from brainmri.reports.comparison import write_comparison_report
from brainmri.rundir import SPLIT_CSV, RunDir

#: Presets of ``brainmri reproduce`` (TrainConfig fields; the rest keep their defaults).
#: ``paper`` repeats the published settings (ImageNet weights). ``scratch`` trains from
#: scratch with the recipe chosen on a validation side carved from training (see
#: docs/training.md, the ablation); ``configs/scratch.yaml`` holds the same settings for
#: ``train`` and ``compare``. ``quick`` is that recipe at a small size: a smoke run of minutes on
#: a CPU with native bf16.
SCRATCH_RECIPE: dict[str, Any] = {
    "weights": "none",
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "schedule": "onecycle",
    "lr": 2e-3,
    "warmup": 0.2,
    "label_smoothing": 0.1,
    "hflip": True,
    "tta": True,
    "ema": 0.998,
}


PRESETS: dict[str, dict[str, Any]] = {
    # A validation side carved from training draws the curves and picks the epoch (the paper drew
    # them on its test side): the one departure from the published settings.
    "paper": {"image_size": 256, "epochs": 10, "weights": "imagenet", "batch_size": 32, "val_size": 0.1},
    # Progressive resizing (64 px for the first 35 % of the epochs, 96 px for the next 30 %) and
    # batches of 64 at twice the learning rate: the same test accuracy as 128 px throughout at
    # batch 32 in 58 % of the time (docs/results/time-to-accuracy and time-to-accuracy-2).
    "scratch": {
        **SCRATCH_RECIPE,
        "image_size": 128,
        "epochs": 40,
        "progressive": "64:0.35,96:0.3",
        "batch_size": 64,
        "lr": 4e-3,
        "val_size": 0.1,
        "val_every": 2,
    },
    # The fused optimiser update: at 64 px and batches of 32 the update is a larger share of a
    # step than at the scratch preset's sizes; its epochs took about 7 % less time, the whole run
    # 22 s less (docs/results/quick-fused-preset). No flip averaging: it doubled every forward
    # pass of validation and evaluation, 38 s (23 %) of the time outside the epochs, for 0.006 to
    # 0.022 of test accuracy on the same weights (docs/results/quick-no-flip); the scratch preset
    # keeps it.
    "quick": {
        **SCRATCH_RECIPE,
        "image_size": 64,
        "epochs": 8,
        "limit_per_class": 200,
        "val_size": 0.1,
        "val_every": 4,
        "fused_optimizer": True,
        "tta": False,
    },
}


#: Trainings at once (``--jobs``) a preset runs by default on a CPU machine. The quick preset's
#: three depths at 64 px gain most from running side by side: 405-425 s end to end instead of
#: 480-490 s, alternated on one 2-core VM (docs/results/quick-jobs). Each run then computes with
#: one thread, another rounding path: its numbers differ from a 2-thread run's.
PRESET_JOBS: dict[str, int] = {"quick": 2}


def preset_jobs(preset: str, device: str) -> int:
    """The preset's trainings at once on a CPU (at most the usable CPUs), and 1 on a GPU."""
    from brainmri.runtime import resolve_device, usable_cpus

    if resolve_device(device).type != "cpu":
        return 1
    return min(PRESET_JOBS.get(preset, 1), usable_cpus())


#: Size at which ``reproduce`` prepares data (the paper's); presets train at their own size.
PREPARE_SIZE = 256


def _prepared_matches(prepared: Path, source: Path, size: int) -> bool:
    info_path = prepared / data_mod.PREPARE_JSON
    if not info_path.is_file():
        return False
    settings = json.loads(info_path.read_text(encoding="utf-8")).get("settings", {})
    return settings.get("source") == str(source.resolve()) and int(settings.get("size", -1)) == size


def preset_config(preset: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a ``reproduce`` preset, with ``overrides`` (None: keep the preset's)."""
    if preset not in PRESETS:
        raise BrainMRIError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(values)


def reproduce(
    data: str | Path | None = None,
    preset: str = "paper",
    out: str | Path = "reproduce",
    archs: Sequence[str] | None = None,
    cv: int | None = None,
    n_bootstrap: int = 1000,
    progress: bool = True,
    log: Log = print,
    externals: Sequence[str | Path] = (),
    seeds: int | None = None,
    boxes: str | Path | None = None,
    leakage: bool = False,
    leakage_archs: Sequence[str] | None = None,
    leakage_seeds: int | None = None,
    finished_only: bool = False,
    jobs: int | None = None,
    **overrides: Any,
) -> Path:
    """Fetch (or use ``data``), prepare, and compare with a preset's settings; returns the
    HTML report.

    Data are always prepared as the paper did (256 px), so duplicate detection does not
    depend on the preset; training resizes from there. ``out/prepared-256/`` is reused when
    it was made from the same source; the comparison lives in ``out/<preset>/`` and resumes
    when rerun. ``overrides`` are TrainConfig fields (epochs, image_size, weights, seed,
    device, ...). With ``leakage``, the controlled leakage study (:mod:`brainmri.experiments.leakage`) runs
    the first of ``leakage_archs`` (default: the first architecture) on its two arms at
    ``leakage_seeds`` seeds (default: ``seeds``, else 3) in ``out/<preset>-leakage/``, and the
    report gains its section. ``finished_only`` trains nothing and reports the finished runs
    (:func:`brainmri.experiments.compare.compare`); it does not combine with ``leakage``.
    ``jobs`` trainings of the comparison, and of the leakage study, run at once
    (:func:`brainmri.experiments.compare.compare`); by default the preset's (:data:`PRESET_JOBS`).
    """
    from brainmri.data.fetch import ensure_dataset
    from brainmri.experiments.leakage import leakage_sections, run_leakage_study
    from brainmri.experiments.side_by_side import check_jobs

    config = preset_config(preset, **overrides)
    jobs = check_jobs(preset_jobs(preset, config.device) if jobs is None else jobs, config.device)  # before fetching
    if leakage and cv:
        raise BrainMRIError("the leakage study compares single 80/20 splits; it does not combine with --cv")
    if leakage and finished_only:
        raise BrainMRIError("--finished-only reports the comparison's finished runs; run it without --leakage")
    out = Path(out)
    started = time.perf_counter()
    source = ensure_dataset(data)
    prepared = out / f"prepared-{PREPARE_SIZE}"
    if _prepared_matches(prepared, source, PREPARE_SIZE):
        log(f"using prepared data in {prepared}")
    else:
        log(f"preparing {source} at {PREPARE_SIZE} px into {prepared}")
        preparation.prepare(source, prepared, size=PREPARE_SIZE, overwrite=prepared.exists(), progress=progress)
    config = config.replace(data=str(prepared.resolve()))
    meta = {"preset": preset, "source": str(source), "n_bootstrap": n_bootstrap}
    common: dict[str, Any] = dict(cv=cv, n_bootstrap=n_bootstrap, progress=progress, log=log, externals=externals)
    report = compare(prepared, out / preset, config, archs=archs or PAPER_ARCHS, meta=meta, seeds=seeds, boxes=boxes,
                     finished_only=finished_only, jobs=jobs, **common)  # fmt: skip
    if leakage:
        arch = list(leakage_archs or archs or PAPER_ARCHS)[0]
        study = run_leakage_study(prepared, out / f"{preset}-leakage", config.replace(arch=arch),
                                  seeds=leakage_seeds or seeds or 3, externals=externals, n_bootstrap=n_bootstrap,
                                  progress=progress, log=log, jobs=jobs)  # fmt: skip
        sections = leakage_sections(study)
        sections[0]["text"].append(f"Details: ../{preset}-leakage/leakage.md.")
        report = rewrite_report(out / preset, meta, extra=sections)
    log(f"reproduce finished in {time.perf_counter() - started:.0f} s")
    return report


def rewrite_report(out: Path, meta: dict[str, Any], extra: Sequence[dict] = ()) -> Path:
    """Rebuild a finished comparison's report from its runs' records (no training, no model
    except for the failure gallery's Grad-CAM, which is reused when already drawn)."""
    from brainmri.evaluation.gallery import FAILURES_CSV, FAILURES_PNG, MAX_TILES

    record = read_json(out / COMPARISON_JSON, {})
    results = load_results(out)
    for arch, res in results.items():
        if "runs" in res:
            continue
        run = RunDir(out / "runs" / arch)
        if (run.figures / FAILURES_CSV).is_file():
            n = sum(1 for _ in (run.figures / FAILURES_CSV).open(encoding="utf-8")) - 1
            png = run.figures / FAILURES_PNG
            res["gallery"] = {"misclassified": n, "shown": min(n, MAX_TILES), "csv": str(run.figures / FAILURES_CSV),
                              "figure": str(png) if png.is_file() else None}  # fmt: skip
    leakage = leakage_counts(out / record.get("split", SPLIT_CSV))
    _, html_path = write_comparison_report(out, results, cv=None, meta=meta, leakage=leakage, extra=extra)
    return html_path
