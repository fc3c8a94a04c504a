"""Sampling for training: each epoch's order, the balancing extras, the batches, and the
generators that key every random draw by ``(seed, epoch, step, rank)``.

Keying draws by position instead of by a running generator is what makes a resumed run
continue exactly where it stopped, with any number of loader workers or processes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from brainmri.config import SamplingSettings
from brainmri.labels import CLASSES


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=len(CLASSES)).tolist()


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple (seed, epoch, step, ...), independent of global state."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def step_seed(*key: int) -> int:
    """A seed for a training step's default generators from (seed, epoch, step, rank)."""
    return int(generator(*key).initial_seed())


@contextlib.contextmanager
def step_rng(device: torch.device, *key: int) -> Iterator[None]:
    """Seed the generators one training step's dropout draws from (the CPU's and ``device``'s)
    by (seed, epoch, step, rank), and put their state back afterwards: the masks are those of an
    uninterrupted run on any number of ranks and workers, and code around training sees torch's
    global RNG as it left it."""
    seed = step_seed(*key)
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else 0
    # nn.Dropout takes no generator: it draws from the device's default one, so that is seeded, only inside this fork.
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        elif device.type == "mps":  # pragma: no cover - Apple GPUs; their state is not put back
            torch.mps.manual_seed(seed)
        yield


def epoch_order(labels: torch.Tensor, balance: str, seed: int, epoch: int) -> torch.Tensor:
    """Shuffled training indices for one epoch.

    With ``oversample`` every smaller class (in the paper's data: ``normal``) gets extra
    indices drawn from its own images up to the size of the largest class; the extras are
    augmented like every other sample, i.e. they are the paper's extra augmented images.
    """
    gen = generator(seed, epoch, 0xBA1)
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


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    out = list(order.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:  # BatchNorm cannot train on a single image
        out.pop()
    return out


def epoch_batches(labels: torch.Tensor, config: SamplingSettings, epoch: int, rank: int, world_size: int):
    """This rank's batches of indices for ``epoch``: the same number in every epoch."""
    order = epoch_order(labels, config.balance, config.seed, epoch)
    shard = order[rank::world_size][: len(order) // world_size]
    return batches(shard, config.batch_size)


class AugmentedBatches(torch.utils.data.Dataset):
    """Batches gathered and augmented in DataLoader worker processes (``--workers N``)."""

    def __init__(self, images, labels, index_batches, augment, keys):
        self.images, self.labels, self.batches, self.augment, self.keys = images, labels, index_batches, augment, keys

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches[i]
        return self.augment(self.images[idx], generator=generator(*self.keys[i])), self.labels[idx]


def steps_per_epoch(labels: torch.Tensor, config: SamplingSettings, rank: int = 0, world_size: int = 1) -> int:
    """Optimiser steps in one epoch (the same in every epoch): the length of the schedule."""
    return len(epoch_batches(labels, config, 1, rank, world_size))
