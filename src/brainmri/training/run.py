"""Training as in the paper (Adam 1e-4, cross-entropy, 10 epochs, batch 32, 256 px) or with a
recipe that learns from scratch (AdamW, OneCycle, label smoothing, flips, weight averaging),
resumable, and the same command under ``torchrun`` for several processes.

This module sets up the run folder (:class:`brainmri.rundir.RunDir`), decodes the images
once into uint8 tensors (on the GPU when there is one), and drives :mod:`brainmri.training.loop`
epoch by epoch: train, validate, record, checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from brainmri.config import LoopSettings, TrainConfig
from brainmri.data.prepared import PreparedFolder
from brainmri.errors import BrainMRIError
from brainmri.files import FolderLock, read_json, write_json
from brainmri.labels import CLASSES
from brainmri.models.build import build_model, count_parameters
from brainmri.models.card import make_card
from brainmri.models.checkpoint import read_checkpoint, save_checkpoint
from brainmri.provenance import keep_diff
from brainmri.rundir import RunDir
from brainmri.runtime import resolve_device, resolve_precision
from brainmri.training import loop as engine
from brainmri.training import sampling
from brainmri.training.records import (
    RunLog,
    absolute_paths,
    best_metrics,
    card_fields,
    check_run_dir,
    environment_info,
    recipe_text,
    summary_record,
    validate_config,
    write_history,
)

#: ``last.pt`` (model, optimiser and averaged weights: about 1 GB for a ResNet-152) is written
#: after an epoch only when this long has passed since it was last written, and always after the
#: last epoch and when training is stopped. Short epochs (the quick preset's 13 s at 64 px) then
#: no longer spend a fifth of their time writing it, and a crash loses at most this much training
#: plus one epoch.
CHECKPOINT_EVERY_SECONDS = 60.0

# --- the run ------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One training run's fixed context: folder, settings, device, data."""

    dir: RunDir
    config: TrainConfig
    loop: LoopSettings  # what the training loop reads of the config
    device: torch.device
    precision: str
    rank: int
    world_size: int
    log: RunLog
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_paths: list[str]
    selects: bool
    card_base: dict[str, Any]
    folder: PreparedFolder  # the prepared folder's records, read once
    last_saved: float = 0.0  # time.perf_counter() when last.pt was last written (0: not yet)
    # (probabilities, pooled features) of the validation pass of the best epoch so far, in memory
    # only (None after a resume, or where validation kept nothing): the end of training reuses them
    kept_val: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    step_callback: engine.StepCallback | None = None,
) -> Path:
    """Train ``config`` into ``run_dir`` and return it; see :mod:`brainmri.rundir` for the folder.

    ``resume`` continues from ``checkpoints/last.pt`` with the run's saved config (only the
    device and workers may change). ``step_callback(epoch, step)`` runs after every step;
    raising KeyboardInterrupt there behaves like Ctrl-C (tests use it).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    rank, world_size = engine.dist_env()
    device = resolve_device(config.device)
    own_group = world_size > 1 and not dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if world_size > 1:  # a default run name holds the time: rank 0's wins
        box = [str(run_dir)]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    deterministic, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    created: list[Path] = []  # the run folder, once this call has written it
    lock = FolderLock()  # rank 0 holds the run folder while it writes there
    try:
        run, parts, state, t0 = _start(
            config, RunDir(run_dir), device, rank, world_size, overwrite, resume, created, lock
        )
        _fit(run, parts, state, t0, started, progress, step_callback)
        return run_dir
    except BaseException:
        # A run that stopped before its first checkpoint (unreadable data, say) has nothing to
        # resume; left behind, its folder would only block the retry.
        if created and not RunDir(run_dir).last.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()
        torch.use_deterministic_algorithms(deterministic)  # leave the process as we found it
        torch.backends.cudnn.benchmark = benchmark
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _busy(run: RunDir) -> str:
    return (
        f"run folder {run.path} is in use by another brainmri process (training or resuming it); "
        "wait for it to end, or stop it first"
    )


def _resolve_config(
    config: TrainConfig,
    run: RunDir,
    rank: int,
    world_size: int,
    device: torch.device,
    overwrite: bool,
    resume: bool,
    lock: FolderLock,
) -> tuple[TrainConfig, list[dict[str, str]] | None, PreparedFolder | None]:
    """The run's settings (a resumed run's own), checked on rank 0, its split rows (a new run's),
    and on rank 0 its prepared folder, opened to check them. An existing run folder is locked
    first: a second process resuming or overwriting it is refused."""
    from brainmri.data.splits import effective_split

    error, rows, folder = None, None, None
    if not resume:  # absolute paths in config.json, so the run can be resumed and audited from anywhere
        config = config.replace(**absolute_paths(config))
    if rank == 0:
        try:
            if run.path.is_dir():
                lock.acquire(run.path, _busy(run))
            check_run_dir(run, overwrite, resume)
            if resume:
                config = _saved_config(run, config)
            folder = validate_config(config)
            resolve_precision(config.precision, device)
            if not resume:
                rows = effective_split(config, folder)
                _check_every_class_trains(rows, config)
        except BrainMRIError as exc:
            error = str(exc)
    engine.broadcast_error(error, world_size)
    if resume and rank != 0:  # rank 0 read it above, before checking it; the others read it now that it passed
        config = _saved_config(run, config)
    return config, rows, folder


def _check_every_class_trains(rows: list[dict[str, str]], config: TrainConfig) -> None:
    """The model has an output for every class of :data:`CLASSES`; one with no training image
    would be an output that never learns, and a model that silently cannot predict it."""
    counts = {c: 0 for c in CLASSES}
    for r in rows:
        if r["side"] == "train" and r["label"] in counts:
            counts[r["label"]] += 1
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
        raise BrainMRIError(
            f"no training images of {', '.join(missing)} in {config.data} (the model needs every class: "
            f"{', '.join(CLASSES)}); add images of {'it' if len(missing) == 1 else 'them'} and prepare again"
        )


def _saved_config(run: RunDir, given: TrainConfig) -> TrainConfig:
    saved = TrainConfig.from_dict(json.loads(run.config.read_text(encoding="utf-8")))
    return saved.replace(device=given.device, workers=given.workers)


def _start(
    config: TrainConfig,
    run: RunDir,
    device: torch.device,
    rank: int,
    world_size: int,
    overwrite: bool,
    resume: bool,
    created: list[Path],
    lock: FolderLock,
) -> tuple[_Run, engine.Parts, engine.TrainState, float]:
    """Check, write the folder's records, load the data, build (or restore) the parts."""
    from brainmri.data.prepared import load_split
    from brainmri.data.splitfile import write_split

    config, rows, folder = _resolve_config(config, run, rank, world_size, device, overwrite, resume, lock)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed + rank)  # weight init; dropout draws from per-step seeds (sampling.step_rng)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # The model before anything is written: missing weights must not leave a run folder behind.
    model = build_model(
        config.arch, config.weights, len(CLASSES), config.finetune, zero_init_residual=config.zero_init_residual
    ).to(device)
    if rank == 0:
        if not resume:
            if overwrite and run.path.exists():
                shutil.rmtree(run.path)  # replaced only now that the new run has passed every check
            run.path.mkdir(parents=True, exist_ok=True)
            lock.acquire(run.path, _busy(run))  # the new folder (the old one's lock goes with it)
            created.append(run.path)
            assert rows is not None  # rank 0 drew them in _resolve_config (a new run)
            write_split(rows, run.split)
            write_json(run.config, config.to_dict())
        env = environment_info(device, precision, world_size)
        keep_diff(run.path, env["code"])
        if resume and run.environment.is_file():  # keep the first session's record
            first = read_json(run.environment, {})
            env = {**first, "resumed": [*first.get("resumed", []), env]}
        write_json(run.environment, env)
    engine.broadcast_error(None, world_size)  # every rank waits until split.csv exists
    log = RunLog(run.log if rank == 0 else None, echo=False)

    t0 = time.perf_counter()
    folder = folder or PreparedFolder.open(config.data)  # manifest and prepare.json: read once per process
    train_x, train_y, _ = load_split(folder, run.split, "train", size=config.image_size)
    # The side watched each epoch: a validation side carved from training, which draws the
    # curves and chooses the best epoch. Without one (--val-size 0) nothing is validated during
    # training: the test side is looked at only by evaluation, once, at the end.
    selects = config.val_size > 0
    if selects:
        val_x, val_y, val_paths = load_split(folder, run.split, "val", size=config.image_size)
    else:
        val_x, val_y, val_paths = train_x[:0], train_y[:0], []
    if config.workers == 0:
        train_x, train_y = train_x.to(device), train_y.to(device)
    val_x, val_y = val_x.to(device), val_y.to(device)
    card_base = card_fields(config, run, train_y, folder, selects)
    loop = config.loop_section()
    r = _Run(
        run,
        config,
        loop,
        device,
        precision,
        rank,
        world_size,
        log,
        train_x,
        train_y,
        val_x,
        val_y,
        val_paths,
        selects,
        card_base,
        folder,
        time.perf_counter(),
    )
    parts = engine.build_parts(model, loop, train_y, precision, device, rank, world_size)
    state = engine.TrainState()
    if resume:
        ckpt = read_checkpoint(run.last, annex=False)
        state = engine.restore(parts, ckpt, rank == 0)
    return r, parts, state, t0


def _save_last(run: _Run, parts: engine.Parts, state: engine.TrainState, epoch_done: int, session_start: float) -> None:
    if not run.main:
        return
    card = make_card(**run.card_base, metrics=best_metrics(state.best, run.selects))
    extra = {
        **state.to_extra(),
        "rng": {"torch": torch.get_rng_state()},
        "scheduler": parts.scheduler.state_dict(),
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "total_seconds": state.spent + time.perf_counter() - session_start,
    }
    save_checkpoint(run.dir.last, parts.model, card, parts.optimizer, epoch_done, extra)
    run.last_saved = time.perf_counter()


def _fit(
    run: _Run,
    parts: engine.Parts,
    state: engine.TrainState,
    t0: float,
    started: float,
    progress: bool,
    step_callback: engine.StepCallback | None,
) -> None:
    """The epoch loop: train, validate, record, checkpoint; Ctrl-C saves and stops between steps."""
    from tqdm import tqdm

    config, log = run.config, run.log
    log.echo = progress and run.main
    _log_start(run, parts, state, t0)
    session_start = started
    writer = None
    if config.tensorboard and run.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run.dir.tensorboard))
    n_steps = sampling.steps_per_epoch(run.train_y, run.loop.sampling, run.rank, run.world_size)
    try:
        with engine.graceful_interrupt() as interrupt:
            for epoch in range(state.epoch + 1, config.epochs + 1):
                bar = tqdm(
                    total=n_steps,
                    initial=state.step,
                    desc=f"epoch {epoch}/{config.epochs}",
                    unit="batch",
                    disable=not (progress and run.main),
                    dynamic_ncols=True,
                    leave=False,
                )
                try:
                    totals = engine.train_one_epoch(
                        parts, state, run.train_x, run.train_y, epoch, run.loop, run.device,
                        rank=run.rank, world_size=run.world_size, interrupt=interrupt,
                        step_callback=step_callback, bar=bar,
                    )  # fmt: skip
                except engine.Interrupted as stop:
                    bar.close()
                    how = _stopped_by(interrupt)
                    if stop.partial is None:  # a second Ctrl-C inside a step, or one rank alone
                        log(f"{how} inside epoch {epoch}, step {stop.step + 1}; kept the last saved state")
                        raise
                    state.step, state.running = stop.step, stop.partial
                    _save_last(run, parts, state, epoch - 1, session_start)
                    log(f"{how} in epoch {epoch} after step {stop.step}; saved last.pt, continue with --resume")
                    raise
                bar.close()
                saved = _end_epoch(run, parts, state, epoch, totals, session_start, writer)
                stop_now = engine.stop_agreed(interrupt["stop"], 0, 0, run.device, run.world_size)
                if epoch < config.epochs and stop_now:
                    if not saved:
                        _save_last(run, parts, state, epoch, session_start)
                    log(f"{_stopped_by(interrupt)} after epoch {epoch}; saved last.pt, continue with --resume")
                    raise KeyboardInterrupt
    finally:
        if writer is not None:
            writer.close()
    _finish(run, state, session_start)


def _stopped_by(interrupt: dict[str, Any]) -> str:
    """``interrupted`` (Ctrl-C, or a step callback in tests) or ``stopped by SIGTERM``."""
    return "stopped by SIGTERM" if interrupt.get("signal") == "SIGTERM" else "interrupted"


def _log_start(run: _Run, parts: engine.Parts, state: engine.TrainState, t0: float) -> None:
    config = run.config
    counts = sampling.class_counts(run.train_y)
    run.log(
        f"data: {len(run.train_y)} training and {len(run.val_y)} validation images of {config.image_size} px "
        f"({', '.join(f'{c} {n}' for c, n in zip(CLASSES, counts, strict=True))}) "
        f"loaded in {time.perf_counter() - t0:.1f}s; "
        + (
            f"the best epoch is chosen on {len(run.val_y)} validation images carved from training"
            if run.selects
            else "the last epoch is kept (no validation side: --val-size 0; the test side is not looked at)"
        )
    )
    if state.epoch or state.step:
        run.log(f"resumed {run.dir.path} at epoch {state.epoch + 1}, step {state.step}")
        return
    run.log(
        f"training {config.arch} ({count_parameters(parts.model, True):,} of {count_parameters(parts.model):,} "
        f"parameters trainable, weights {config.weights}, finetune {config.finetune}) on {run.device}, "
        f"precision {run.precision}; {recipe_text(config)}"
        + (f", {run.world_size} processes" if run.world_size > 1 else "")
    )


def _end_epoch(run: _Run, parts, state: engine.TrainState, epoch: int, totals, session_start, writer) -> bool:
    """Validate, append the history row, keep the best model, save last.pt when it is due
    (:data:`CHECKPOINT_EVERY_SECONDS`, and after the last epoch); True if it was saved."""
    config = run.config
    if run.world_size > 1:  # rank 0's BatchNorm statistics are the ones saved: validate with them
        for buffer in parts.evaluated.buffers():
            dist.broadcast(buffer, src=0)
    val: Mapping[str, Any] = {"loss": None, "accuracy": None}
    val_seconds = 0.0
    if run.selects and (epoch % config.val_every == 0 or epoch == config.epochs):
        val_start = time.perf_counter()
        # one process validating in fp32 keeps the pass's probabilities and features, for the end of training
        keep = run.world_size == 1 and config.eval_precision == "fp32"
        val = engine.validate(
            parts.evaluated, run.val_x, run.val_y, run.loop, run.precision, run.device, run.world_size, run.rank, keep
        )
        val_seconds = time.perf_counter() - val_start
    seen = max(totals["seen"], 1)
    row = {
        "epoch": epoch,
        "train_loss": totals["loss"] / seen,
        "train_acc": totals["correct"] / seen,
        "val_loss": val["loss"],
        "val_acc": val["accuracy"],
        "lr": totals["lr"],
        "seconds": totals["train_seconds"] + val_seconds,
        "val_seconds": val_seconds,
        "images_per_second": totals["seen"] / max(totals["train_seconds"], 1e-9),
    }
    state.history.append(row)
    state.epoch, state.step, state.running = epoch, 0, None
    best = state.best
    validated = row["val_acc"] is not None
    improved = not run.selects or (
        validated
        and (
            row["val_acc"] > best["val_acc"]
            or (row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])
        )
    )
    if improved:
        state.best = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "train_acc", "train_loss")}
        run.kept_val = (val["proba"], val["features"]) if "proba" in val else None
    due = run.main and (epoch == config.epochs or time.perf_counter() - run.last_saved >= CHECKPOINT_EVERY_SECONDS)
    if run.main:
        if improved:
            card = make_card(**run.card_base, metrics=best_metrics(state.best, run.selects))
            save_checkpoint(run.dir.best, parts.evaluated, card, None, epoch)
        if due:
            _save_last(run, parts, state, epoch, session_start)
        write_history(run.dir.history, state.history)
        if writer is not None:
            for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "images_per_second"):
                if row[key] is not None:
                    writer.add_scalar(key.replace("_", "/", 1) if "_" in key else key, row[key], epoch)
            writer.flush()
    scores = f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f} " if validated else ""
    run.log(
        f"epoch {epoch}/{config.epochs}"
        + (f" at {config.epoch_size(epoch)} px" if config.progressive_sizes() else "")
        + f" train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f} "
        f"{scores}lr {row['lr']:.3g} "
        f"{row['seconds']:.1f}s {row['images_per_second']:.1f} img/s" + (" (best)" if run.selects and improved else "")
    )
    return due


def _finish(run: _Run, state: engine.TrainState, session_start: float) -> None:
    history, best = state.history, state.best
    total = state.spent + time.perf_counter() - session_start
    if not run.main:
        return
    summary = {
        **summary_record(history, best, run.selects, total),
        "arch": run.config.arch,
        "device": str(run.device),
        "precision": run.precision,
        "eval_precision": run.config.eval_precision,
        "world_size": run.world_size,
    }
    summary["input_check"], summary["temperature"] = _fit_kept_model(run)
    write_json(run.dir.summary, summary)
    chosen = f"best val_acc {best['val_acc']:.4f} at epoch {best['epoch']}" if run.selects else "kept the last epoch"
    run.log(f"finished: {chosen}, {total:.1f}s in total; run folder {run.dir.path}")


def _fit_kept_model(run: _Run) -> tuple[str, float | None]:
    """Fit the input check and the temperature on the kept model and write them into its
    ``best.pt``, once: the last write of that file (evaluation and later
    calibrations record theirs beside it). One forward pass over the training side and one over
    the validation side serve both fits and ``val_predictions.csv``; the validation side's is
    the one that validated the kept epoch where this process still holds it (not after a
    resume, nor under ``--eval-precision auto``). Returns the summary's words on the input
    check, and the temperature."""
    from brainmri.inference.forward import probabilities_with
    from brainmri.inference.input_check import STATS_KEY, pooled_features
    from brainmri.models.checkpoint import model_from_checkpoint, read_checkpoint, write_checkpoint

    ckpt = read_checkpoint(run.dir.best, annex=False)
    model, _ = model_from_checkpoint(ckpt, run.dir.best, device=run.device)
    _, train_features = probabilities_with(model, run.train_x, pooled_features, device=run.device)
    val_proba, val_features = None, train_features[:0]
    if run.kept_val is not None:  # set with the best epoch: validation ran these weights, fp32, with the card's flip
        val_proba, val_features = run.kept_val
    elif run.selects and len(run.val_y):
        # the flip averaging the card asks for, as evaluation predicts; the features are the
        # slices' own (not their mirror images'), as the input check scores them
        val_proba, val_features = probabilities_with(
            model, run.val_x, pooled_features, flip=bool(ckpt["card"].get("tta")), device=run.device
        )
    features = np.concatenate([train_features, val_features])
    check, entry, stats = _calibrate(run, features)
    temperature, fit = _fit_temperature(run, val_proba, list(ckpt["card"]["classes"]))
    card = dict(ckpt["card"])
    if entry is not None:
        card["input_check"], ckpt[STATS_KEY] = entry, stats
    if fit is not None:
        card.update(temperature=temperature, calibration=fit)
    if entry is not None or fit is not None:
        write_checkpoint(run.dir.best, {**ckpt, "card": card})
    return check, temperature


def _calibrate(run: _Run, features: np.ndarray) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """Calibrate the input check on the kept model's pooled ``features`` of the training side,
    train then val images; a failure is logged ('brainmri calibrate RUN' can redo it). Returns
    the summary's words, the card entry and the statistics."""
    from brainmri.inference.input_check import fit_statistics_of, training_groups
    from brainmri.inference.run_record import Run

    record = Run.read(run.dir.path, {}, run.folder)
    images = torch.cat([run.train_x.cpu(), run.val_x.cpu()])
    labels = torch.cat([run.train_y.cpu(), run.val_y.cpu()]).numpy()
    try:
        sides, groups, source = training_groups(record)
        if sides != (["train", "val"] if len(run.val_y) else ["train"]) or len(groups) != len(labels):
            raise BrainMRIError(f"split.csv of {run.dir.path} does not match the images trained on")
        entry, stats = fit_statistics_of(features, images, labels, groups, source)
    except BrainMRIError as exc:
        run.log(f"input check not calibrated: {exc}; run 'brainmri calibrate {run.dir.path}' to do it")
        return f"not calibrated: {exc}", None, None
    run.log(
        f"input check calibrated on {entry['calibrated_on']['images']} training images: "
        f"threshold {entry['threshold']:.2f} (percentile {entry['percentile']:g}), "
        f"image statistics threshold {entry['image_statistics']['threshold']:.2f}"
    )
    return f"calibrated, threshold {entry['threshold']:.4g}", entry, stats


def _fit_temperature(
    run: _Run, proba: np.ndarray | None, classes: list[str]
) -> tuple[float | None, dict[str, Any] | None]:
    """Fit temperature scaling on the kept model's probabilities ``proba`` of the validation
    side (never the test side), and write them as ``val_predictions.csv``: the temperature and
    the card's record of the fit; None, None without a validation side."""
    from brainmri.metrics.calibration import fit_temperature, nll
    from brainmri.metrics.predictions import write_labelled_predictions

    if proba is None:
        return None, None
    labels = run.val_y.cpu().numpy()
    write_labelled_predictions(run.dir.val_predictions, run.val_paths, labels, proba, classes)
    temperature = fit_temperature(proba, labels)
    fit = {"fitted_on": f"val side of split.csv, {len(labels)} images carved from training", "temperature": temperature,
           "val_nll_before": nll(proba, labels)}  # fmt: skip
    run.log(f"temperature scaling fitted on {len(labels)} validation images: T = {temperature:.3f}")
    return temperature, fit
