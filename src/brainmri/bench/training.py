"""Training and data-pipeline timings of ``brainmri bench``: ours against the naive baseline.

"Ours" is exactly what ``brainmri train`` runs: :func:`brainmri.training.run.train` is called on a
prepared sample of real slices and timed step by step through its ``step_callback``.
The baseline is the textbook torchvision loop in the same process: ``ImageFolder`` decoding
and resizing every JPEG with Pillow, per-sample ``transforms``, fp32, NCHW, plain Adam.
"""

from __future__ import annotations

import gc
import itertools
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainmri.bench.measure import PeakRSS, sync, throughput
from brainmri.errors import BrainMRIError
from brainmri.rundir import SPLIT_CSV


class _StopTiming(Exception):
    """Raised from the training step callback once enough steps are timed."""


@dataclass(frozen=True)
class TrainTiming:
    """What one training timing runs: batches of ``batch_size`` slices at ``image_size`` px,
    ``warmup`` steps untimed, then ``steps`` timed ones."""

    image_size: int
    batch_size: int
    warmup: int
    steps: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> TrainTiming:
        return cls(settings["image_size"], settings["batch_size"], settings["warmup"], settings["steps"])


class StepClock:
    """The times at which training steps end, from the end of step ``warmup`` (the first steps
    pay for allocation and caches) to the end of step ``warmup + steps``; the same for ours and
    the baseline, so that both are timed alike."""

    def __init__(self, timing: TrainTiming, device: torch.device):
        self.timing, self.device = timing, device
        self.marks: list[float] = []

    def tick(self, step: int) -> bool:
        """Step ``step`` has ended (0: none yet); True once the last timed step has."""
        if step >= self.timing.warmup:
            sync(self.device)
            self.marks.append(time.perf_counter())
        return step >= self.timing.warmup + self.timing.steps

    def throughput(self) -> dict[str, float]:
        return throughput(self.marks, self.timing.batch_size)


# --- the sample of real slices ----------------------------------------------------------


def sample_sources(data: Path, n: int) -> list[dict[str, str]]:
    """``n`` files of ``data`` taken round-robin over the classes (sorted, so every machine
    picks the same), via :func:`brainmri.data.scan.scan`."""
    from brainmri.data.scan import scan

    by_label: dict[str, list[dict[str, str]]] = {}
    for scanned in scan(data):
        by_label.setdefault(scanned["label"], []).append(scanned)
    picked: list[dict[str, str]] = []
    queues = [iter(rows) for _, rows in sorted(by_label.items())]
    while len(picked) < n and queues:
        for q in list(queues):
            row: dict[str, str] | None = next(q, None)
            if row is None:
                queues.remove(q)
            elif len(picked) < n:
                picked.append(row)
    return picked


def copy_sample(data: Path, rows: Sequence[dict[str, str]], out: Path) -> list[Path]:
    """A folder ``out/<label>/<file>`` of the sampled files: the input of both pipelines."""
    paths = []
    for i, row in enumerate(rows):
        src = data / row["source_path"]
        dst = out / row["label"] / f"{i:05d}{src.suffix.lower()}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


# --- our pipeline: brainmri train, timed ---------------------------------------------------


def time_our_training(
    prepared: Path, work: Path, arch: str, device: torch.device, timing: TrainTiming, **overrides: Any
) -> dict[str, Any]:
    """Images per second of ``brainmri train`` (default config but random weights), between
    the end of step ``warmup`` and the end of step ``warmup + steps``; also peak memory."""
    from brainmri.config import TrainConfig
    from brainmri.runtime import resolve_precision
    from brainmri.training.run import train

    config = TrainConfig(
        data=str(prepared),
        arch=arch,
        weights="none",
        batch_size=timing.batch_size,
        image_size=timing.image_size,
        epochs=1,
        test_size=0.1,
        device=str(device),
        **overrides,
    )
    clock = StepClock(timing, device)

    def on_step(epoch: int, step: int) -> None:
        if clock.tick(step):
            raise _StopTiming

    run_dir = work / f"run-{arch}"
    gc.collect()
    with PeakRSS() as rss:
        try:
            train(config, run_dir, overwrite=True, progress=False, step_callback=on_step)
        except _StopTiming:
            pass
    shutil.rmtree(run_dir, ignore_errors=True)
    if len(clock.marks) < timing.steps + 1:
        raise BrainMRIError(
            f"the bench sample gave fewer than {timing.warmup + timing.steps} training batches of "
            f"{timing.batch_size}; "
            "use fewer --steps or a smaller --batch-size"
        )
    return {
        **clock.throughput(),
        "peak_rss_mb": rss.peak_mb,
        "precision": resolve_precision(config.precision, device),
        "channels_last": config.channels_last,
        "workers": config.workers,
    }


def time_our_data(prepared: Path, device: torch.device, image_size: int, batch_size: int, batches: int) -> float:
    """Images per second that ``brainmri train``'s data path delivers without the model: a batch
    gathered from the uint8 tensor in memory, augmented, moved and laid out for the model."""
    from brainmri.config import TrainConfig
    from brainmri.data.prepared import load_split
    from brainmri.data.splitfile import write_split
    from brainmri.data.splits import make_split
    from brainmri.training.augment import make_augmenter

    config = TrainConfig(data=str(prepared), image_size=image_size, batch_size=batch_size, device=str(device))
    with tempfile.TemporaryDirectory() as tmp:
        split_file = write_split(make_split(prepared, 0.1, config.seed), Path(tmp) / SPLIT_CSV)
        images, _, _ = load_split(prepared, split_file, "train", size=image_size)
    images = images.to(device)
    augment = make_augmenter(config.augment_section())
    gen = torch.Generator().manual_seed(0)

    def one() -> None:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = augment(images[idx.to(device)], generator=gen)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

    one()
    sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        one()
    sync(device)
    return batches * batch_size / (time.perf_counter() - start)


# --- the naive baseline -----------------------------------------------------------------


def baseline_loader(raw: Path, image_size: int, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """The textbook loader: ``ImageFolder`` opening, decoding and resizing each JPEG with Pillow
    for every sample, then per-sample augmentation, ``ToTensor`` and ``Normalize``."""
    from torchvision import datasets, transforms

    from brainmri.config import TrainConfig
    from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD

    c = TrainConfig()
    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.Grayscale(num_output_channels=3),
            transforms.RandomAffine(
                degrees=c.rotation, translate=(c.shift, c.shift), scale=(1 - c.zoom, 1 + c.zoom), shear=c.shear
            ),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(raw), transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=False
    )


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def time_baseline_training(
    raw: Path, arch: str, device: torch.device, timing: TrainTiming, workers: int
) -> dict[str, Any]:
    """The textbook loop (torchvision's references/classification, without its speed-ups):
    fp32, NCHW, ``model(images)``, ``loss.backward()``, ``optimizer.step()``. The model is ours
    with its input adapter removed, since the loader already gives normalised 3-channel input."""
    from brainmri.models.build import build_model

    torch.manual_seed(0)
    model = build_model(arch, weights="none")
    model.adapter = nn.Identity()
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = nn.CrossEntropyLoss()
    batches = _forever(baseline_loader(raw, timing.image_size, timing.batch_size, workers))
    gc.collect()
    clock = StepClock(timing, device)
    with PeakRSS() as rss:
        for step in itertools.count():
            if clock.tick(step):
                break
            images, target = next(batches)
            images, target = images.to(device), target.to(device)
            output = model(images)
            loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    del batches
    return {**clock.throughput(), "peak_rss_mb": rss.peak_mb, "workers": workers}


def time_baseline_data(raw: Path, image_size: int, batch_size: int, batches: int, workers: int) -> float:
    """Images per second of the textbook loader alone. Its workers prefetch two batches each
    before the clock starts, so enough batches are timed that the prefetch does not count."""
    batches = max(batches, 6 * workers)
    loader = _forever(baseline_loader(raw, image_size, batch_size, workers))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    seconds = time.perf_counter() - start
    del loader
    return batches * batch_size / seconds


# --- ours against the baseline ----------------------------------------------------------


def compare_data_pipelines(
    prepared: Path, raw: Path, device: torch.device, settings: dict[str, Any], quick: bool
) -> dict[str, float]:
    """Images per second of both data pipelines without a model: ours from ``prepared``, the
    baseline from the ``raw`` JPEGs. On a GPU ours is timed over more batches, since one
    batch takes microseconds there."""
    size, bs = settings["image_size"], settings["batch_size"]
    batches = 3 if quick else 10
    ours = time_our_data(prepared, device, size, bs, batches if device.type == "cpu" else 50)
    base = time_baseline_data(raw, size, bs, batches, settings["baseline_workers"])
    return {"ours_ips": ours, "baseline_ips": base}


def _range_pct(values: Sequence[float]) -> float | None:
    """The range of ``values`` as a percentage of their median (None for a single value: one
    timing says nothing about how steady it is)."""
    if len(values) < 2:
        return None
    return 100.0 * (max(values) - min(values)) / statistics.median(values)


def compare_training(
    prepared: Path,
    raw: Path,
    work: Path,
    arch: str,
    device: torch.device,
    settings: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Training throughput and peak memory of ``arch``, ours and the baseline's, with their ratio;
    and the recipe ours trained with (precision, channels_last, workers), for the settings.

    The two are timed in ``settings["pairs"]`` pairs, one right after the other, in alternating
    order (ours first, then the baseline first, ...), so that each pair's ratio is of two
    timings taken seconds apart. The reported images/s and ratio are medians over the pairs, and
    each spread is the range over the pairs as a percentage of that median."""
    timing = TrainTiming.from_settings(settings)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(int(settings.get("pairs", 1))):
        say(f"training {arch}: ours and the naive baseline, pair {i + 1} ...")
        order = ("ours", "base") if i % 2 == 0 else ("base", "ours")
        timed: dict[str, dict[str, Any]] = {}
        for who in order:
            if who == "ours":
                timed[who] = time_our_training(prepared, work, arch, device, timing)
            else:
                timed[who] = time_baseline_training(raw, arch, device, timing, settings["baseline_workers"])
        pairs.append((timed["ours"], timed["base"]))
    ours_ips = [o["ips"] for o, _ in pairs]
    base_ips = [b["ips"] for _, b in pairs]
    ratios = [o / b for o, b in zip(ours_ips, base_ips, strict=True)]
    ours = pairs[0][0]  # the recipe ours trained with: the same in every pair
    row = {
        "ours_ips": statistics.median(ours_ips),
        "baseline_ips": statistics.median(base_ips),
        "ratio": statistics.median(ratios),
        "ours_ips_pairs": ours_ips,
        "baseline_ips_pairs": base_ips,
        "ratio_pairs": ratios,
        "ours_ips_mean": statistics.mean(o["ips_mean"] for o, _ in pairs),
        "baseline_ips_mean": statistics.mean(b["ips_mean"] for _, b in pairs),
        "ours_spread_pct": _range_pct(ours_ips),
        "baseline_spread_pct": _range_pct(base_ips),
        "ratio_spread_pct": _range_pct(ratios),
        "ours_peak_rss_mb": max(o["peak_rss_mb"] for o, _ in pairs),
        "baseline_peak_rss_mb": max(b["peak_rss_mb"] for _, b in pairs),
    }
    say(f"  {arch}: ours {row['ours_ips']:.2f} img/s, baseline {row['baseline_ips']:.2f} img/s")
    recipe = {"precision": ours["precision"], "channels_last": ours["channels_last"], "workers": ours["workers"]}
    return row, recipe
