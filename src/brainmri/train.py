"""Training as in the paper (Adam 1e-4, cross-entropy, 10 epochs, batch 32, 256 px), fast on
CPU and GPU, resumable, and the same command under ``torchrun`` for several processes.

The training images are decoded once and held as one uint8 tensor (on the GPU when there is
one); every batch is gathered by index and augmented as a whole (:mod:`brainmri.augment`).
Each epoch's order, each batch's augmentation and the balancing extras are drawn from
generators seeded by ``(seed, epoch, step)``, so an interrupted run resumed from ``last.pt``
continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from brainmri import __version__
from brainmri.augment import check_augmentation, make_augmenter
from brainmri.checkpoint import atomic_write_text, make_card, read_checkpoint, save_checkpoint
from brainmri.config import TrainConfig
from brainmri.errors import BrainMRIError
from brainmri.labels import CLASSES
from brainmri.models import IMAGENET_MEAN, IMAGENET_STD, build_model, count_parameters, train_mode
from brainmri.preprocess import to_input

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_second")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BALANCE_MODES = ("oversample", "class_weights", "none")
#: How a run picks the model it keeps (``checkpoints/best.pt``), recorded in its card and summary.
SELECTION_LAST = "last epoch (no selection; the test side chooses nothing)"
SELECTION_BEST = "best validation accuracy on the val side carved from training"

StepCallback = Callable[[int, int], None]


# --- device and precision ------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one (under torchrun: this process's GPU), else the CPU."""
    if name in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BrainMRIError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BrainMRIError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BrainMRIError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise BrainMRIError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def cpu_name() -> str:
    """The processor's model name, for run records and benchmarks (Linux: /proc/cpuinfo)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    and measured slower than fp32 (see docs/training.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it (else fp16), bf16 on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise BrainMRIError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            # Native bf16 only (Ampere and newer): emulated bf16 would be slower than fp16 + scaling.
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise BrainMRIError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """A reusable autocast context for ``precision`` (already resolved) on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


# --- one step, one evaluation ----------------------------------------------------------


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a float batch in [0, 1]; returns (summed loss, correct) as
    detached tensors so that a GPU is not synchronised every step."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_ctx or contextlib.nullcontext():
        logits = model(images)
        loss = criterion(logits, labels)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    n = labels.shape[0]
    return loss.detach().float() * n, (logits.detach().argmax(1) == labels).sum()


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    channels_last: bool = False,
) -> tuple[float, int, int]:
    """Unweighted cross-entropy summed over ``images`` (uint8), the number correct and the count."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(labels), batch_size):
        x = _to_model(to_input(images[start : start + batch_size].to(device, non_blocking=True)), channels_last)
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        with autocast_ctx or contextlib.nullcontext():
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return float(loss_sum), int(correct), len(labels)


def _to_model(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# --- sampling --------------------------------------------------------------------------


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=len(CLASSES)).tolist()


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple (seed, epoch, step, ...), independent of global state."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def _step_seed(*key: int) -> int:
    """A seed for the global RNG from (seed, epoch, step, rank)."""
    return int(_generator(*key).initial_seed())


def epoch_order(labels: torch.Tensor, balance: str, seed: int, epoch: int) -> torch.Tensor:
    """Shuffled training indices for one epoch.

    With ``oversample`` every smaller class (in the paper's data: ``normal``) gets extra
    indices drawn from its own images up to the size of the largest class; the extras are
    augmented like every other sample, i.e. they are the paper's extra augmented images.
    """
    gen = _generator(seed, epoch, 0xBA1)
    labels = labels.cpu()
    parts = [torch.arange(len(labels))]
    if balance == "oversample":
        counts = class_counts(labels)
        target = max(counts)
        for cls, n in enumerate(counts):
            if 0 < n < target:
                members = torch.nonzero(labels == cls).flatten()
                need = target - n
                reps = torch.cat([members[torch.randperm(n, generator=gen)] for _ in range(math.ceil(need / n))])
                parts.append(reps[:need])
    order = torch.cat(parts)
    return order[torch.randperm(len(order), generator=gen)]


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``balanced`` weights: n / (k * n_c); classes absent from training get 0."""
    counts = torch.tensor(class_counts(labels), dtype=torch.float32)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on a single image
        batches.pop()
    return batches


class _AugmentedBatches(torch.utils.data.Dataset):
    """Batches gathered and augmented in DataLoader worker processes (``--workers N``)."""

    def __init__(self, images, labels, batches, augment, keys):
        self.images, self.labels, self.batches, self.augment, self.keys = images, labels, batches, augment, keys

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches[i]
        return self.augment(self.images[idx], generator=_generator(*self.keys[i])), self.labels[idx]


# --- run folder --------------------------------------------------------------------------


def default_run_name(config: TrainConfig) -> str:
    """``<arch>-<weights>-<YYYYmmdd-HHMMSS>``: unique per start, readable in a listing."""
    weights = config.weights if config.weights in ("imagenet", "none") else "local"
    return f"{config.arch}-{weights}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def environment_info(device: torch.device, precision: str, world_size: int) -> dict[str, Any]:
    """Library versions and hardware, so that timings and results can be put in context."""
    import torchvision

    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = cpu_name()
    return {
        "brainmri": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "device": str(device),
        "hardware": hardware,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
        "world_size": world_size,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _check_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Never destroy a run by accident; never delete a folder that is not a run. Only checks:
    an overwritten run is deleted when the new one is written, after every other check."""
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file() or not (run_dir / "config.json").is_file():
            raise BrainMRIError(f"nothing to resume in {run_dir}: no config.json and checkpoints/last.pt")
        if (run_dir / "summary.json").is_file():
            raise BrainMRIError(f"run {run_dir} already finished; use --overwrite to train it again from scratch")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise BrainMRIError(
                f"run folder {run_dir} already exists; use --resume to continue it, --overwrite to replace it, "
                "or choose another --name"
            )
        if not (run_dir / "config.json").is_file():
            raise BrainMRIError(f"refusing to overwrite {run_dir}: it is not a run folder (no config.json)")


def _absolute_paths(config: TrainConfig) -> dict[str, str | None]:
    """``data``, ``split`` and a local ``weights`` file as absolute paths."""
    local_weights = config.weights not in ("imagenet", "none", "")
    return {
        "data": str(Path(config.data).resolve()) if config.data else config.data,
        "split": str(Path(config.split).resolve()) if config.split else config.split,
        "weights": str(Path(config.weights).resolve()) if local_weights else config.weights,
    }


def validate_config(config: TrainConfig) -> None:
    """Refuse settings that cannot train, before anything is written (a run folder, a
    comparison's record) that would have to be cleaned up by hand."""
    if not config.data:
        raise BrainMRIError("no training data: pass --data PREPARED (a folder made by 'brainmri data prepare')")
    if not Path(config.data).is_dir():
        raise BrainMRIError(f"prepared data folder not found: {config.data}")
    for name, least in (("epochs", 1), ("batch_size", 1), ("image_size", 8)):
        if getattr(config, name) < least:
            raise BrainMRIError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(config, name)}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise BrainMRIError(f"--lr must be a positive number, got {config.lr}")
    if not (config.weight_decay >= 0 and math.isfinite(config.weight_decay)):
        raise BrainMRIError(f"--weight-decay must be a number >= 0, got {config.weight_decay}")
    if config.seed < 0:
        raise BrainMRIError(f"--seed must be >= 0, got {config.seed}")
    if config.augment:
        check_augmentation(config)
    if config.balance not in BALANCE_MODES:
        raise BrainMRIError(f"unknown --balance {config.balance!r}; choose one of {', '.join(BALANCE_MODES)}")
    if config.limit_per_class is not None and config.limit_per_class < 1:
        raise BrainMRIError(f"--limit-per-class must be at least 1, got {config.limit_per_class}")
    if config.workers < 0:
        raise BrainMRIError(f"--workers must be >= 0, got {config.workers}")
    if not 0.0 <= config.val_size < 1.0:
        raise BrainMRIError(f"--val-size must be at least 0 and below 1, got {config.val_size}")
    if config.weights not in ("imagenet", "none", "") and not Path(config.weights).is_file():
        raise BrainMRIError(f"weights file not found: {config.weights} (use imagenet, none or a file path)")


def _effective_split(config: TrainConfig) -> list[dict[str, str]]:
    """The split rows this run uses, as a single split (k-fold resolved, validation carved from
    the training side when ``val_size`` > 0, limit applied)."""
    from brainmri import data

    if config.split:
        rows = data.read_split(config.split)
        if "fold" in rows[0]:
            if config.fold is None:
                raise BrainMRIError(f"{config.split} is a k-fold split; choose the held-out fold with --fold K")
            rows = [
                {**r, "side": side} for side in ("train", "test") for r in data.select_split(rows, side, config.fold)
            ]
    else:
        rows = data.make_split(config.data, config.test_size, config.seed)
    if config.val_size > 0:
        rows = data.carve_validation(rows, config.val_size, config.seed)
    else:
        rows = [{**r, "side": "train"} if r["side"] == "val" else r for r in rows]
    if config.limit_per_class:
        # A seeded random subset: the first N by name would be biased (prepared files are named
        # after their source folder, so e.g. the dataset's own Testing/ images come first).
        taken: dict[tuple[str, str], int] = {}
        keep = set()
        for i in np.random.default_rng(config.seed).permutation(len(rows)):
            key = (rows[i]["side"], rows[i]["label"])
            if taken.get(key, 0) < config.limit_per_class:
                taken[key] = taken.get(key, 0) + 1
                keep.add(int(i))
        rows = [r for i, r in enumerate(rows) if i in keep]
    return [{k: r[k] for k in ("path", "label", "group", "side")} for r in rows]


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Log:
    """One line per event, to the console (unless quiet) and appended to train.log."""

    def __init__(self, path: Path | None, echo: bool):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {message}\n")


@contextlib.contextmanager
def _graceful_interrupt():
    """Turn the first Ctrl-C into a flag checked between steps, so that the state saved on
    interrupt is never half an optimiser step; a second Ctrl-C stops at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- distributed -----------------------------------------------------------------------------


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _broadcast_error(message: str | None, world_size: int) -> None:
    """Rank 0 checks and writes; every rank raises the same error if rank 0 found one."""
    if world_size > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message:
        raise BrainMRIError(message)


def _all_reduce(values: list[float], device: torch.device, world_size: int) -> list[float]:
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


#: Under torchrun, ranks agree on a Ctrl-C every this many steps (one tiny all-reduce that
#: makes the CPU wait for the GPU, so not every step).
STOP_CHECK_EVERY = 10


def _stop_agreed(flag: bool, step: int, last_step: int, device: torch.device, world_size: int) -> bool:
    """Whether to stop after ``step``: all ranks must stop after the same step, or the ones
    still training would wait forever for the others' gradients."""
    if world_size == 1:
        return flag
    if step % STOP_CHECK_EVERY and step != last_step:
        return False
    return _all_reduce([float(flag)], device, world_size)[0] > 0


# --- training ---------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    step_callback: StepCallback | None = None,
) -> Path:
    """Train ``config`` into ``run_dir`` and return it; see docs/design.md for the folder.

    ``resume`` continues from ``checkpoints/last.pt`` with the run's saved config (only the
    device and workers may change). ``step_callback(epoch, step)`` runs after every step;
    raising KeyboardInterrupt there behaves like Ctrl-C (tests use it).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    rank, world_size = _dist_env()
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
    try:
        return _train(
            config, run_dir, device, rank, world_size, overwrite, resume, progress, step_callback, started, created
        )
    except BaseException:
        # A run that stopped before its first checkpoint (unreadable data, say) has nothing to
        # resume; left behind, its folder would only block the retry.
        if created and not (run_dir / "checkpoints" / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)  # leave the process as we found it
        torch.backends.cudnn.benchmark = benchmark
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config, run_dir, device, rank, world_size, overwrite, resume, progress, step_callback, started, created
) -> Path:
    main = rank == 0
    error, rows = None, None
    if not resume:  # absolute paths in config.json, so the run can be resumed and audited from anywhere
        config = config.replace(**_absolute_paths(config))
    if main:
        try:
            _check_run_dir(run_dir, overwrite, resume)
            if resume:
                saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
                config = saved.replace(device=config.device, workers=config.workers)
            validate_config(config)
            resolve_precision(config.precision, device)
            if not resume:
                rows = _effective_split(config)
        except BrainMRIError as exc:
            error = str(exc)
    _broadcast_error(error, world_size)
    if resume:
        saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        config = saved.replace(device=config.device, workers=config.workers)
    precision = resolve_precision(config.precision, device)

    # Reproducibility: seeds for everything that uses global RNG (dropout, weight init).
    torch.manual_seed(config.seed + rank)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # The model before anything is written: missing weights must not leave a run folder behind.
    model = build_model(config.arch, config.weights, len(CLASSES), config.finetune).to(device)
    if main:
        if not resume:
            from brainmri.data import write_split

            if overwrite and run_dir.exists():
                shutil.rmtree(run_dir)  # replaced only now that the new run has passed every check
            run_dir.mkdir(parents=True, exist_ok=True)
            created.append(run_dir)
            write_split(rows, run_dir / "split.csv")
            _write_json(run_dir / "config.json", config.to_dict())
        env = environment_info(device, precision, world_size)
        if resume and (run_dir / "environment.json").is_file():  # keep the first session's record
            first = json.loads((run_dir / "environment.json").read_text(encoding="utf-8"))
            env = {**first, "resumed": [*first.get("resumed", []), env]}
        _write_json(run_dir / "environment.json", env)
    _broadcast_error(None, world_size)  # every rank waits until split.csv exists
    log = _Log(run_dir / "train.log" if main else None, echo=progress and main)

    # Data: decoded once, held as uint8 tensors (on the GPU when training there).
    from brainmri.data import load_split, prepared_size, read_split

    t0 = time.perf_counter()
    split_file = run_dir / "split.csv"
    train_x, train_y, _ = load_split(config.data, split_file, "train", size=config.image_size)
    # The side watched each epoch: a validation side carved from training when the run chooses
    # its best epoch, otherwise the test side (the paper's curves), which then chooses nothing.
    selects = config.val_size > 0
    val_x, val_y, _ = load_split(config.data, split_file, "val" if selects else "test", size=config.image_size)
    if config.workers == 0:
        train_x, train_y = train_x.to(device), train_y.to(device)
    val_x, val_y = val_x.to(device), val_y.to(device)
    counts = class_counts(train_y)
    side_counts: dict[str, dict[str, int]] = {"val": {}, "test": {}}
    for r in read_split(split_file):
        if r["side"] in side_counts:
            side_counts[r["side"]][r["label"]] = side_counts[r["side"]].get(r["label"], 0) + 1
    log(
        f"data: {len(train_y)} training and {len(val_y)} validation images of {config.image_size} px "
        f"({', '.join(f'{c} {n}' for c, n in zip(CLASSES, counts, strict=True))}) "
        f"loaded in {time.perf_counter() - t0:.1f}s; "
        + (
            f"the best epoch is chosen on {len(val_y)} validation images carved from training"
            if selects
            else "the last epoch is kept (the validation curves use the test side and choose nothing)"
        )
    )

    # Loss, optimiser.
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    weight = class_weights(train_y).to(device) if config.balance == "class_weights" else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    scaler = make_scaler(precision, device)
    amp = autocast(precision, device)
    augment = make_augmenter(config)
    net: nn.Module = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    card_base = dict(
        arch=config.arch,
        image_size=config.image_size,
        weights=config.weights,
        classes=CLASSES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        finetune=config.finetune,
        prepared_size=prepared_size(config.data),
        training_data={
            "prepared": str(config.data),
            "counts": dict(zip(CLASSES, counts, strict=True)),
            "total": len(train_y),
            "balance": config.balance,
            "augmentation": {k: getattr(config, k) for k in ("augment", "rotation", "shift", "zoom", "shear", "hflip")},
        },
        split={
            "file": "split.csv",
            "source": config.split or f"made by data.make_split(test_size={config.test_size}, seed={config.seed})",
            "fold": config.fold,
            "seed": config.seed,
            "train": len(train_y),
            "val": sum(side_counts["val"].values()),
            "test": sum(side_counts["test"].values()),
            "test_counts": side_counts["test"],
            "selection": SELECTION_BEST if selects else SELECTION_LAST,
        },
        config=config.to_dict(),
    )

    # State that resuming restores.
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
    first_epoch, first_step, running = 1, 0, None
    spent = 0.0  # seconds of earlier sessions
    if resume:
        ckpt = read_checkpoint(run_dir / "checkpoints" / "last.pt")
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        extra = ckpt["extra"]
        history, best, spent = list(extra["history"]), dict(extra["best"]), float(extra["total_seconds"])
        first_epoch, first_step, running = int(ckpt["epoch"]) + 1, int(extra["step"]), extra.get("running")
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        if main:
            _set_rng_state(extra["rng"])
        log(f"resumed {run_dir} at epoch {first_epoch}, step {first_step}")
    else:
        log(
            f"training {config.arch} ({count_parameters(model, True):,} of {count_parameters(model):,} parameters "
            f"trainable, weights {config.weights}, finetune {config.finetune}) on {device}, precision {precision}"
            + (f", {world_size} processes" if world_size > 1 else "")
        )

    writer = None
    if config.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    session_start = started

    def save_last(epoch_done: int, step: int, running_state: dict | None) -> None:
        if not main:
            return
        card = make_card(**card_base, metrics=_best_metrics(best, selects))
        extra = {
            "history": history,
            "best": best,
            "step": step,
            "running": running_state,
            "rng": _rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "total_seconds": spent + time.perf_counter() - session_start,
        }
        save_checkpoint(run_dir / "checkpoints" / "last.pt", model, card, optimizer, epoch_done, extra)

    from tqdm import tqdm

    with _graceful_interrupt() as interrupt:
        for epoch in range(first_epoch, config.epochs + 1):
            order = epoch_order(train_y, config.balance, config.seed, epoch)
            shard = order[rank::world_size][: len(order) // world_size]
            batches = _batches(shard, config.batch_size)
            keys = [(config.seed, epoch, step, rank) for step in range(len(batches))]
            if running is None or first_step == 0:
                running = {"loss": 0.0, "correct": 0, "seen": 0, "train_seconds": 0.0}
            start_step, first_step = first_step, 0
            epoch_start = time.perf_counter()
            train_mode(net)
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # f64: a resumed epoch sums alike
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            if config.workers > 0:
                data = _AugmentedBatches(train_x, train_y, batches, augment, keys)
                stream = torch.utils.data.DataLoader(
                    torch.utils.data.Subset(data, range(start_step, len(batches))),
                    batch_size=None,
                    num_workers=config.workers,
                    pin_memory=device.type == "cuda",
                )
            else:
                stream = (
                    (augment(train_x[batches[s]], generator=_generator(*keys[s])), train_y[batches[s]])
                    for s in range(start_step, len(batches))
                )
            bar = tqdm(
                total=len(batches),
                initial=start_step,
                desc=f"epoch {epoch}/{config.epochs}",
                unit="batch",
                disable=not (progress and main),
                dynamic_ncols=True,
                leave=False,
            )
            step = start_step
            # Whether the weights and optimiser are whole (between steps), and whether every rank
            # stopped at the same step: only then may an interrupt save last.pt.
            at_boundary, agreed = True, world_size == 1
            try:
                for x, y in stream:
                    x = _to_model(x.to(device, non_blocking=True), config.channels_last)
                    y = y.to(device, non_blocking=True)
                    # Dropout draws from a generator keyed by the step, so that a resumed run, every
                    # rank and any number of loader workers get the masks of an uninterrupted run.
                    torch.manual_seed(_step_seed(config.seed, epoch, step, rank))
                    at_boundary = False
                    batch_loss, batch_correct = train_step(net, optimizer, criterion, x, y, amp, scaler)
                    loss_sum += batch_loss
                    correct += batch_correct
                    seen += len(y)
                    step += 1
                    at_boundary = True  # weights, optimiser, totals and step counter agree again
                    bar.update(1)
                    if bar.disable is False and (step % 5 == 0 or step == len(batches)):
                        elapsed = time.perf_counter() - epoch_start
                        bar.set_postfix(
                            loss=f"{float(loss_sum) / seen:.4f}",
                            acc=f"{int(correct) / seen:.3f}",
                            img_s=f"{seen * world_size / max(elapsed, 1e-9):.1f}",
                        )
                    if step_callback is not None:
                        step_callback(epoch, step)
                    if _stop_agreed(interrupt["stop"], step, len(batches), device, world_size):
                        agreed = True
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                bar.close()
                if writer is not None:
                    writer.close()
                if not (at_boundary and agreed):  # a second Ctrl-C inside a step, or one rank alone
                    log(f"interrupted inside epoch {epoch}, step {step + 1}; kept the last saved state")
                    raise
                elapsed = time.perf_counter() - epoch_start
                own = _all_reduce([float(loss_sum), int(correct), seen], device, world_size)
                partial = {
                    "loss": running["loss"] + own[0],
                    "correct": running["correct"] + int(own[1]),
                    "seen": running["seen"] + int(own[2]),
                    "train_seconds": running["train_seconds"] + elapsed,
                }
                save_last(epoch - 1, step, partial)
                log(f"interrupted in epoch {epoch} after step {step}; saved last.pt, continue with --resume")
                raise
            bar.close()
            train_seconds = running["train_seconds"] + time.perf_counter() - epoch_start
            # ``running`` (a resumed epoch's earlier steps) is already summed over ranks: add it once.
            own = _all_reduce([float(loss_sum), int(correct), seen], device, world_size)
            loss_total, correct_total, seen_total = (
                running["loss"] + own[0],
                running["correct"] + own[1],
                running["seen"] + own[2],
            )
            if world_size > 1:  # rank 0's BatchNorm statistics are the ones saved: validate with them
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)
            val_start = time.perf_counter()
            v_loss, v_correct, v_n = evaluate_batches(
                model,
                val_x[rank::world_size],
                val_y[rank::world_size],
                config.batch_size,
                device,
                amp,
                config.channels_last,
            )
            v_loss, v_correct, v_n = _all_reduce([v_loss, v_correct, v_n], device, world_size)
            epoch_seconds = train_seconds + time.perf_counter() - val_start
            running = None
            row = {
                "epoch": epoch,
                "train_loss": loss_total / max(seen_total, 1),
                "train_acc": correct_total / max(seen_total, 1),
                "val_loss": v_loss / max(v_n, 1),
                "val_acc": v_correct / max(v_n, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": epoch_seconds,
                "images_per_second": seen_total / max(train_seconds, 1e-9),
            }
            history.append(row)
            improved = not selects or (
                row["val_acc"] > best["val_acc"]
                or (row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])
            )
            if improved:
                best = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "train_acc", "train_loss")}
            if main:
                if improved:
                    card = make_card(**card_base, metrics=_best_metrics(best, selects))
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", model, card, None, epoch)
                save_last(epoch, 0, None)
                _write_history(run_dir / "history.csv", history)
                if writer is not None:
                    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "images_per_second"):
                        writer.add_scalar(key.replace("_", "/", 1) if "_" in key else key, row[key], epoch)
                    writer.flush()
            log(
                f"epoch {epoch}/{config.epochs} train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f} "
                f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f} "
                f"{row['seconds']:.1f}s {row['images_per_second']:.1f} img/s"
                + (" (best)" if selects and improved else "")
            )
            between_epochs = _stop_agreed(interrupt["stop"], step=0, last_step=0, device=device, world_size=world_size)
            if epoch < config.epochs and between_epochs:
                log(f"interrupted after epoch {epoch}; saved last.pt, continue with --resume")
                if writer is not None:
                    writer.close()
                raise KeyboardInterrupt

    total = spent + time.perf_counter() - session_start
    if writer is not None:
        writer.close()
    if main:
        summary = {
            "finished": True,
            "epochs": len(history),
            "selection": SELECTION_BEST if selects else SELECTION_LAST,
            "best_epoch": best["epoch"],
            "best_val_acc": best["val_acc"],
            "best_val_loss": best["val_loss"],
            "total_seconds": total,
            "epoch_seconds": [r["seconds"] for r in history],
            "avg_train_loss": sum(r["train_loss"] for r in history) / len(history),
            "avg_val_loss": sum(r["val_loss"] for r in history) / len(history),
            "final_val_acc": history[-1]["val_acc"],
            "images_per_second": sum(r["images_per_second"] for r in history) / len(history),
            "arch": config.arch,
            "device": str(device),
            "precision": precision,
            "world_size": world_size,
        }
        _write_json(run_dir / "summary.json", summary)
        chosen = f"best val_acc {best['val_acc']:.4f} at epoch {best['epoch']}" if selects else "kept the last epoch"
        log(f"finished: {chosen}, {total:.1f}s in total; run folder {run_dir}")
    return run_dir


def _best_metrics(best: dict[str, Any], selects: bool) -> dict[str, Any]:
    if best["epoch"] == 0:
        return {}
    side = "val side of split.csv (carved from training)" if selects else "test side of split.csv"
    return {"split": side, "selection": SELECTION_BEST if selects else SELECTION_LAST, **best}
