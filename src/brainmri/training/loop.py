"""The training loop: one epoch, validation, checkpointable state (:class:`TrainState`) and
interrupt handling. The optimiser, its schedule and the weight average are built in
:mod:`brainmri.training.optim`; this module steps them.

Every random draw of an epoch (its order, each batch's augmentation, the balancing extras,
dropout) comes from :mod:`brainmri.training.sampling`, keyed by ``(seed, epoch, step, rank)``, so a
run resumed from its last checkpoint continues exactly where it stopped.
:mod:`brainmri.training.run` sets up the run folder and drives this module epoch by epoch, as
torchvision's reference ``main`` drives ``train_one_epoch`` and ``evaluate``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from brainmri.config import LoopSettings
from brainmri.errors import BrainMRIError
from brainmri.inference.forward import probabilities, probabilities_with, score_of
from brainmri.inference.input_check import pooled_features
from brainmri.models.build import train_mode
from brainmri.runtime import autocast, make_scaler
from brainmri.training.augment import make_augmenter
from brainmri.training.optim import build_ema, build_optimizer, build_scheduler
from brainmri.training.sampling import (
    AugmentedBatches,
    class_weights,
    epoch_batches,
    generator,
    step_rng,
    steps_per_epoch,
)

StepCallback = Callable[[int, int], None]
#: Under torchrun, ranks agree on a Ctrl-C every this many steps (one tiny all-reduce that
#: makes the CPU wait for the GPU, so not every step).
STOP_CHECK_EVERY = 10


# --- state -------------------------------------------------------------------------------------


@dataclass
class Parts:
    """What a run trains with; built once, restored on resume."""

    model: nn.Module  # the plain model (what is saved)
    net: nn.Module  # what the forward pass runs: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    augment: Callable
    autocast: contextlib.AbstractContextManager
    scaler: torch.amp.GradScaler | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and kept: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class TrainState:
    """Where a run is: what resuming restores besides the weights and optimiser."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in epoch + 1
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf})
    running: dict[str, float] | None = None  # totals of a partly finished epoch, summed over ranks
    spent: float = 0.0  # seconds of earlier sessions

    def to_extra(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": self.best,
            "step": self.step,
            "running": self.running,
            "total_seconds": self.spent,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        extra = ckpt["extra"]
        return cls(
            epoch=int(ckpt["epoch"]),
            step=int(extra["step"]),
            history=list(extra["history"]),
            best=dict(extra["best"]),
            running=extra.get("running"),
            spent=float(extra["total_seconds"]),
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C between steps: ``partial`` holds the epoch's totals so far (None when the
    weights are not whole, i.e. a second Ctrl-C inside a step, and nothing may be saved)."""

    def __init__(self, step: int, partial: dict[str, float] | None):
        super().__init__()
        self.step, self.partial = step, partial


# --- distributed and interrupts -------------------------------------------------------------------


def dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def broadcast_error(message: str | None, world_size: int) -> None:
    """Rank 0 checks and writes; every rank raises the same error if rank 0 found one."""
    if world_size > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message:
        raise BrainMRIError(message)


def all_reduce(values: list[float], device: torch.device, world_size: int) -> list[float]:
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def stop_agreed(flag: bool, step: int, last_step: int, device: torch.device, world_size: int) -> bool:
    """Whether to stop after ``step``: all ranks must stop after the same step, or the ones
    still training would wait forever for the others' gradients."""
    if world_size == 1:
        return flag
    if step % STOP_CHECK_EVERY and step != last_step:
        return False
    return all_reduce([float(flag)], device, world_size)[0] > 0


#: Signals that stop training gracefully: Ctrl-C, and what ``kill``, ``timeout``, systemd,
#: Docker and batch schedulers send to end a job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[dict[str, Any]]:
    """Turn the first Ctrl-C or SIGTERM into a flag checked between steps, so that the state
    saved on interrupt is never half an optimiser step; a second one acts at once (Ctrl-C:
    KeyboardInterrupt, SIGTERM: the process ends). ``flag["signal"]`` names the signal."""
    flag: dict[str, Any] = {"stop": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"], flag["signal"] = True, signal.Signals(signum).name
        for sig, old in previous.items():
            signal.signal(sig, old)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- one step, one epoch, validation ------------------------------------------------------------


def train_step(parts: Parts, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (and schedule step) on a float batch in [0, 1]; returns (summed
    loss, correct) as detached tensors so that a GPU is not synchronised every step."""
    parts.optimizer.zero_grad(set_to_none=True)
    with parts.autocast:
        logits = parts.net(images)
        loss = parts.criterion(logits, labels)
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        parts.optimizer.step()
    parts.scheduler.step()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)
    n = labels.shape[0]
    return loss.detach().float() * n, (logits.detach().argmax(1) == labels).sum()


def _stream(parts, images, labels, index_batches, keys, start, config, device):
    """(augmented batch, labels) from ``start`` on, in this process or in loader workers."""
    if config.workers > 0:
        data = AugmentedBatches(images, labels, index_batches, parts.augment, keys)
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(data, range(start, len(index_batches))),
            batch_size=None,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
        )
    return (
        (parts.augment(images[index_batches[s]], generator=generator(*keys[s])), labels[index_batches[s]])
        for s in range(start, len(index_batches))
    )


def train_one_epoch(
    parts: Parts,
    state: TrainState,
    images: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    config: LoopSettings,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    interrupt: dict[str, Any] | None = None,
    step_callback: StepCallback | None = None,
    bar: Any = None,
) -> dict[str, float]:
    """Train one epoch from ``state.step`` on; returns its totals (loss, correct, seen,
    train_seconds), summed over ranks and over an earlier session's part of the epoch, and the
    learning rate of its last step.

    Raises :class:`Interrupted` on Ctrl-C (or a callback's KeyboardInterrupt) between steps.
    """
    index_batches = epoch_batches(labels, config.sampling, epoch, rank, world_size)
    keys = [(config.seed, epoch, s, rank) for s in range(len(index_batches))]
    running = state.running if state.running is not None and state.step > 0 else None
    running = running or {"loss": 0.0, "correct": 0, "seen": 0, "train_seconds": 0.0}
    start = state.step
    started = time.perf_counter()
    train_mode(parts.net)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # f64: a resumed epoch sums alike
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, step = 0, start
    lr = parts.optimizer.param_groups[0]["lr"]
    # Whether the weights and optimiser are whole (between steps), and whether every rank
    # stopped at the same step: only then may an interrupt save the state.
    at_boundary, agreed = True, world_size == 1

    def totals() -> dict[str, float]:
        own = all_reduce([float(loss_sum), int(correct), seen], device, world_size)
        return {
            "loss": running["loss"] + own[0],
            "correct": running["correct"] + int(own[1]),
            "seen": running["seen"] + int(own[2]),
            "train_seconds": running["train_seconds"] + time.perf_counter() - started,
            "lr": lr,
        }

    size = config.epoch_size(epoch)
    try:
        for x, y in _stream(parts, images, labels, index_batches, keys, start, config, device):
            x = x.to(device, non_blocking=True)
            if size != x.shape[-1]:  # --progressive: an early epoch at a smaller size, fewer FLOPs
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            at_boundary = False
            lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step uses (the schedule then moves on)
            # Dropout draws from generators keyed by the step, so that a resumed run, every
            # rank and any number of loader workers get the masks of an uninterrupted run.
            with step_rng(device, config.seed, epoch, step, rank):
                batch_loss, batch_correct = train_step(parts, x, y)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(y)
            step += 1
            at_boundary = True  # weights, optimiser, totals and step counter agree again
            if bar is not None:
                bar.update(1)
                if not bar.disable and (step % 5 == 0 or step == len(index_batches)):
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(
                        loss=f"{float(loss_sum) / seen:.4f}",
                        acc=f"{int(correct) / seen:.3f}",
                        img_s=f"{seen * world_size / max(elapsed, 1e-9):.1f}",
                    )
            if step_callback is not None:
                step_callback(epoch, step)
            if stop_agreed(bool(interrupt and interrupt["stop"]), step, len(index_batches), device, world_size):
                agreed = True
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise Interrupted(step, totals() if at_boundary and agreed else None) from None
    return totals()


def validate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: LoopSettings,
    precision: str,
    device: torch.device,
    world_size: int = 1,
    rank: int = 0,
    keep: bool = False,
) -> dict[str, Any]:
    """Loss and accuracy on the validation images, through the one inference function that
    ``evaluate`` uses (fp32 unless ``--eval-precision auto``), summed over ranks.

    With ``keep`` (one process), also the images' probabilities (``proba``) and pooled
    features (``features``) from the same pass: if these weights are the ones the run keeps,
    the end of training fits the temperature and the input check on them instead of running
    the validation side through the model a second time."""
    if keep and world_size > 1:
        raise BrainMRIError("validate(keep=True) needs the whole validation side in one process")
    settings: dict[str, Any] = {
        "batch_size": 64,  # as evaluate's default: fp32 sums then match to the last bit
        "flip": config.tta,
        "precision": "fp32" if config.eval_precision == "fp32" else precision,
        "device": device,
    }
    x, y = images[rank::world_size], labels[rank::world_size]
    features = None
    if keep:
        proba, features = probabilities_with(model, x, pooled_features, **settings)
    else:
        proba = probabilities(model, x, **settings)
    own = score_of(proba, y)
    loss_sum, correct, n = all_reduce([own.get("loss_sum", 0.0), own.get("correct", 0), own["n"]], device, world_size)
    out: dict[str, Any] = {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1), "n": int(n)}
    if keep:
        out.update(proba=proba, features=features)
    return out


def build_parts(
    model: nn.Module,
    config: LoopSettings,
    train_y: torch.Tensor,
    precision: str,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Parts:
    """Everything a run trains with, from its settings: optimiser, per-step schedule over the
    whole run, loss (label smoothing, class weights), augmentation, autocast, weight average."""
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    total = config.epochs * steps_per_epoch(train_y, config.sampling, rank, world_size)
    weight = class_weights(train_y).to(device) if config.sampling.balance == "class_weights" else None
    net: nn.Module = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Parts(
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.optim, total),
        criterion=nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing),
        augment=make_augmenter(config.augment),
        autocast=autocast(precision, device),
        scaler=make_scaler(precision, device),
        ema=build_ema(model, config.ema),
    )


def restore(parts: Parts, ckpt: dict[str, Any], main: bool) -> TrainState:
    """Weights, optimiser, schedule, average, loss scale and RNG of ``last.pt``."""
    extra = ckpt["extra"]
    parts.model.load_state_dict(ckpt["model_state"])
    parts.optimizer.load_state_dict(ckpt["optimizer_state"])
    if extra.get("scheduler") is not None:
        parts.scheduler.load_state_dict(extra["scheduler"])
    if parts.ema is not None and extra.get("ema") is not None:
        parts.ema.load_state_dict(extra["ema"])
    if parts.scaler is not None and extra.get("scaler"):
        parts.scaler.load_state_dict(extra["scaler"])
    if main:
        torch.set_rng_state(extra["rng"]["torch"])
    return TrainState.from_checkpoint(ckpt)
