"""What a training run writes into its folder besides checkpoints, and the checks made before
anything is written: its default name, the environment record, the history, the log, the
model card's fields and the summary.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmri import __version__
from brainmri.config import TrainConfig
from brainmri.data.prepared import PreparedFolder
from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_text
from brainmri.labels import CLASSES
from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD, weights_record
from brainmri.rundir import RunDir
from brainmri.runtime import cpu_name
from brainmri.terminal import safe
from brainmri.training import sampling

#: ``seconds`` is the epoch's training plus its validation; ``val_seconds`` the validation alone
#: (0 in an epoch that did not validate), so that what validation costs can be read off any run.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "val_seconds",
    "images_per_second",
)


#: How a run picks the model it keeps (``checkpoints/best.pt``), recorded in its card and summary.
SELECTION_LAST = "last epoch (no validation side, no selection; the test side chooses nothing)"


SELECTION_BEST = "best validation accuracy on the val side carved from training"


def default_run_name(config: TrainConfig) -> str:
    """``<arch>-<weights>-<YYYYmmdd-HHMMSS>``: unique per start, readable in a listing."""
    weights = config.weights if config.weights in ("imagenet", "none") else "local"
    return f"{config.arch}-{weights}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def environment_info(device: torch.device, precision: str, world_size: int) -> dict[str, Any]:
    """Library versions, hardware and the code's provenance (git commit, uncommitted changes,
    command line), so that timings and results can be put in context and traced to their code."""
    import torchvision

    from brainmri.provenance import provenance

    return {
        **provenance(),
        "brainmri": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "device": str(device),
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
        "world_size": world_size,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


class RunLog:
    """One line per event, to the console (unless quiet) and appended to train.log."""

    def __init__(self, path: Path | None, echo: bool):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        if self.echo:
            from tqdm import tqdm

            tqdm.write(safe(message), file=sys.stderr)  # paths in messages may hold escape codes
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {message}\n")


def check_run_dir(run: RunDir, overwrite: bool, resume: bool) -> None:
    """Never destroy a run by accident; never delete a folder that is not a run. Only checks:
    an overwritten run is deleted when the new one is written, after every other check."""
    if resume:
        if not run.can_resume():
            raise BrainMRIError(f"nothing to resume in {run.path}: no config.json and checkpoints/last.pt")
        if run.finished():
            raise BrainMRIError(f"run {run.path} already finished; use --overwrite to train it again from scratch")
        return
    if run.path.exists() and any(run.path.iterdir()):
        if not overwrite:
            raise BrainMRIError(
                f"run folder {run.path} already exists; use --resume to continue it, --overwrite to replace it, "
                "or choose another --name"
            )
        if not run.is_run():
            raise BrainMRIError(f"refusing to overwrite {run.path}: it is not a run folder (no config.json)")


def absolute_paths(config: TrainConfig) -> dict[str, str | None]:
    """``data``, ``split``, ``groups`` and a local ``weights`` file as absolute paths."""
    local_weights = config.weights not in ("imagenet", "none", "")
    return {
        "data": str(Path(config.data).resolve()) if config.data else config.data,
        "split": str(Path(config.split).resolve()) if config.split else config.split,
        "groups": str(Path(config.groups).resolve()) if config.groups else config.groups,
        "weights": str(Path(config.weights).resolve()) if local_weights else config.weights,
    }


def validate_config(config: TrainConfig) -> PreparedFolder:
    """Refuse settings that cannot train here, before anything is written (a run folder, a
    comparison's record) that would have to be cleaned up by hand: what the config names must
    exist. The settings themselves were checked when the config was made (:mod:`brainmri.config`).

    Returns the prepared folder, its records read (once: the caller passes it on)."""
    if not config.data:
        raise BrainMRIError("no training data: pass --data PREPARED (a folder made by 'brainmri data prepare')")
    if not Path(config.data).is_dir():
        raise BrainMRIError(f"prepared data folder not found: {config.data}")
    if config.weights not in ("imagenet", "none", "") and not Path(config.weights).is_file():
        raise BrainMRIError(f"weights file not found: {config.weights} (use imagenet, none or a file path)")
    folder = PreparedFolder.open(config.data)
    if config.groups:  # its columns and its coverage of the prepared files, before anything is written
        from brainmri.data.splits import units_by_path

        units_by_path(folder, config.groups, config.groups_missing)
    return folder


def card_fields(
    config: TrainConfig, run: RunDir, train_y: torch.Tensor, prepared: PreparedFolder, selects: bool
) -> dict[str, Any]:
    """The model card's fields that stay the same for the whole run."""
    from brainmri.data.splitfile import read_split
    from brainmri.data.splits import side_counts, split_level

    counts = sampling.class_counts(train_y)
    rows = read_split(run.split)
    sides = side_counts(rows)
    return dict(
        arch=config.arch,
        image_size=config.image_size,
        weights=config.weights,
        classes=CLASSES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        finetune=config.finetune,
        prepared_size=prepared.size,
        tta=config.tta,
        weights_record=weights_record(config.arch, config.weights),
        training_data={
            "prepared": str(config.data),
            "counts": dict(zip(CLASSES, counts, strict=True)),
            "total": len(train_y),
            "balance": config.balance,
            "augmentation": {
                k: getattr(config, k) for k in ("augment", "rotation", "shift", "zoom", "shear", "hflip", "crop")
            },
        },
        split={
            "file": run.split.name,
            "source": config.split
            or f"made by splits.effective_split(test_size={config.test_size}, seed={config.seed})",
            "policy": "given split file" if config.split else config.split_policy,
            # What no side shares: patient (with --groups), duplicate group, or image (random split).
            "level": split_level(config, rows, prepared),
            "groups": config.groups,
            "fold": config.fold,
            "seed": config.seed,
            "train": len(train_y),
            "val": sum(sides.get("val", {}).values()),
            "test": sum(sides.get("test", {}).values()),
            "test_counts": sides.get("test", {}),
            "selection": SELECTION_BEST if selects else SELECTION_LAST,
        },
        config=config.to_dict(),
    )


def best_metrics(best: dict[str, Any], selects: bool) -> dict[str, Any]:
    if best["epoch"] == 0:
        return {}
    if not selects:
        return {"selection": SELECTION_LAST, "epoch": best["epoch"], "train_acc": best["train_acc"],
                "train_loss": best["train_loss"]}  # fmt: skip
    side = "val side of split.csv (carved from training)"
    return {"split": side, "selection": SELECTION_BEST if selects else SELECTION_LAST, **best}


def recipe_text(config: TrainConfig) -> str:
    """The optimisation recipe in one line, for the log and the report."""
    recipe = f"{config.optimizer} lr {config.lr:g} {config.schedule}"
    if config.effective_warmup:
        recipe += f" (warm-up {config.effective_warmup:g})"
    if config.weight_decay:
        recipe += f", weight decay {config.weight_decay:g}"
    if config.label_smoothing:
        recipe += f", label smoothing {config.label_smoothing:g}"
    if config.ema:
        recipe += f", EMA {config.ema:g}"
    flags = [
        name.replace("_", "-")
        for name in ("hflip", "tta", "zero_init_residual", "fused_optimizer")
        if getattr(config, name)
    ]
    if config.progressive_sizes():
        flags.append(f"progressive {config.progressive} then {config.image_size} px")
    if config.crop < 1.0:
        flags.append(f"crops >= {config.crop:g} of the side")
    return ", ".join([recipe, *flags])


def summary_record(history: list[dict[str, Any]], best: dict[str, Any], selects: bool, total: float) -> dict[str, Any]:
    """``summary.json``: written last, so its presence says the run finished."""
    return {
        "finished": True,
        "epochs": len(history),
        "selection": SELECTION_BEST if selects else SELECTION_LAST,
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "best_val_loss": best["val_loss"],
        "total_seconds": total,
        "epoch_seconds": [r["seconds"] for r in history],
        "avg_train_loss": sum(r["train_loss"] for r in history) / len(history),
        "avg_val_loss": _mean_or_none([r["val_loss"] for r in history if r["val_loss"] is not None]),
        "final_val_acc": history[-1]["val_acc"],
        "images_per_second": sum(r["images_per_second"] for r in history) / len(history),
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
