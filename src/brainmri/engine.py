"""The training engine: the optimiser and its schedule, the weight average, one epoch,
validation and interrupt handling, around an explicit :class:`TrainState`.

Every random draw of an epoch (its order, each batch's augmentation, the balancing extras,
dropout) comes from :mod:`brainmri.sampling`, keyed by ``(seed, epoch, step, rank)``, so a
run resumed from its last checkpoint continues exactly where it stopped.
:mod:`brainmri.train` sets up the run folder and drives this module epoch by epoch, as
torchvision's reference ``main`` drives ``train_one_epoch`` and ``evaluate``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from brainmri.config import TrainConfig
from brainmri.errors import BrainMRIError
from brainmri.inference import score
from brainmri.models import train_mode
from brainmri.sampling import AugmentedBatches, epoch_batches, generator, step_seed

StepCallback = Callable[[int, int], None]
#: A OneCycle/warm-up schedule starts at lr / WARMUP_DIVISOR (torch's OneCycleLR default).
WARMUP_DIVISOR = 25.0
#: Under torchrun, ranks agree on a Ctrl-C every this many steps (one tiny all-reduce that
#: makes the CPU wait for the GPU, so not every step).
STOP_CHECK_EVERY = 10


# --- optimiser, schedule, weight average ----------------------------------------------------


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight decay on weights of convolutions and linear
    layers, none on norm layers and biases (decaying a BatchNorm scale only fights the
    normalisation it undoes)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    raise BrainMRIError(f"unknown --optimizer {config.optimizer!r}")


def lr_factor(schedule: str, step: int, total_steps: int, warmup: float) -> float:
    """The learning rate at ``step`` (0-based) as a fraction of the peak ``--lr``, for the
    ``constant`` and ``cosine`` schedules: a linear warm-up from 1/25 over ``warmup`` of the
    steps, then flat or a half cosine down to 0 at the last step."""
    warm = round(warmup * total_steps)
    if step < warm:
        start = 1.0 / WARMUP_DIVISOR
        return start + (1.0 - start) * step / warm
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """A scheduler stepped after every batch. OneCycle is torch's (cosine warm-up from lr/25
    to lr over ``warmup`` of the steps, then cosine annealing to lr/25e4); the others are
    :func:`lr_factor`."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=total_steps,
            pct_start=config.effective_warmup,
            anneal_strategy="cos",
            cycle_momentum=False,
            div_factor=WARMUP_DIVISOR,
        )
    schedule, warmup = config.schedule, config.effective_warmup
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(schedule, step, total_steps, warmup))


def _ema_update(decay: float) -> Callable:
    """An EMA update for AveragedModel whose decay ramps up as (1 + n) / (10 + n), so the first
    steps' nearly random weights are forgotten quickly."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        if averaged and averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, weight)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


def build_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics, or None."""
    if decay <= 0:
        return None
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)


# --- state -------------------------------------------------------------------------------------


@dataclass
class Parts:
    """What a run trains with; built once, restored on resume."""

    model: nn.Module  # the plain model (what is saved)
    net: nn.Module  # what the forward pass runs: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
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


@contextlib.contextmanager
def graceful_interrupt():
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
    config: TrainConfig,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    interrupt: dict[str, bool] | None = None,
    step_callback: StepCallback | None = None,
    bar: Any = None,
) -> dict[str, float]:
    """Train one epoch from ``state.step`` on; returns its totals (loss, correct, seen,
    train_seconds), summed over ranks and over an earlier session's part of the epoch, and the
    learning rate of its last step.

    Raises :class:`Interrupted` on Ctrl-C (or a callback's KeyboardInterrupt) between steps.
    """
    index_batches = epoch_batches(labels, config, epoch, rank, world_size)
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

    try:
        for x, y in _stream(parts, images, labels, index_batches, keys, start, config, device):
            x = x.to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            # Dropout draws from a generator keyed by the step, so that a resumed run, every
            # rank and any number of loader workers get the masks of an uninterrupted run.
            torch.manual_seed(step_seed(config.seed, epoch, step, rank))
            at_boundary = False
            lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step uses (the schedule then moves on)
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
    config: TrainConfig,
    precision: str,
    device: torch.device,
    world_size: int = 1,
    rank: int = 0,
) -> dict[str, float]:
    """Loss and accuracy on the validation images, through the one inference function that
    ``evaluate`` uses (fp32 unless ``--eval-precision auto``), summed over ranks."""
    own = score(
        model,
        images[rank::world_size],
        labels[rank::world_size],
        batch_size=64,  # as evaluate's default: fp32 sums then match to the last bit
        flip=config.tta,
        precision="fp32" if config.eval_precision == "fp32" else precision,
        device=device,
    )
    loss_sum, correct, n = all_reduce([own.get("loss_sum", 0.0), own.get("correct", 0), own["n"]], device, world_size)
    return {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1), "n": int(n)}
