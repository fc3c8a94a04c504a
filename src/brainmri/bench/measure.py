"""Measuring tools of ``brainmri bench``: peak memory of this process and its workers, this
machine's matmul peak, FLOPs counted on the real models, step throughput and percentiles, and a
description of the machine. They measure; they know nothing of what is measured."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock reading after it means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakRSS:
    """Samples the resident memory of this process and its children (DataLoader workers)
    in a background thread; ``peak_mb`` is the largest sum seen while active.

    One sample costs about 2.6 ms of CPU here (psutil walks /proc for the children). Every
    50 ms that took about 5 % of a core from the timed training step (whose OpenMP threads
    then wait for the slowed one at each operator); a training step lasts seconds, so every
    0.5 s loses nothing of the peak."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                # Unique memory of the workers: their RSS counts pages shared with this process.
                total += child.memory_full_info().uss
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def matmul_peak(device: torch.device, dtype: torch.dtype, max_size: int, seconds: float = 1.0) -> dict[str, float]:
    """Best GFLOP/s of a square matmul, growing the size until one product takes long enough
    to time; CPUs without native bf16 are orders of magnitude slower in bf16, so a fixed
    large size could take minutes there. Each size is timed in several short windows and the
    best one kept: other load on the machine can only make a window slower."""
    best, best_n, n = 0.0, 0, 256
    while n <= max_size:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        once = time.perf_counter() - start
        reps = max(1, min(1000, int(seconds / 5 / max(once, 1e-6))))
        for _ in range(5 if once < seconds else 1):
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            rate = 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
            if rate > best:
                best, best_n = rate, n
        if 8 * once > 2 * seconds:  # the next size (8x the work) would take too long to time
            break
        n *= 2
    return {"gflops": best, "size": best_n}


def matmul_max_size(device: torch.device) -> int:
    """The largest square matmul :func:`matmul_peak` may try on ``device``."""
    return 8192 if device.type == "cuda" else 4096


def matmul_table(device: torch.device, seconds: float = 1.0) -> dict[str, float]:
    """The fp32 and bf16 matmul peaks of ``device`` and the sizes they were reached at, each
    size timed in windows of about ``seconds`` / 5 (shorter windows: a quicker, rougher peak)."""
    max_n = matmul_max_size(device)
    fp32 = matmul_peak(device, torch.float32, max_n, seconds)
    bf16 = matmul_peak(device, torch.bfloat16, max_n, seconds)
    return {
        "fp32_gflops": fp32["gflops"],
        "fp32_size": fp32["size"],
        "bf16_gflops": bf16["gflops"],
        "bf16_size": bf16["size"],
    }


@functools.cache
def flops_per_image(arch: str, image_size: int, backward: bool) -> float:
    """FLOPs per image of one forward (+ backward) pass, counted on the real model at the real
    size by ``FlopCounterMode`` (on the meta device: nothing is computed). Counting builds the
    model and takes a second or two, and the bench asks for each count more than once (the time
    budget, the fraction of the peak, the inference summary), so each is counted once a process."""
    from torch.utils.flop_counter import FlopCounterMode

    from brainmri.models.build import build_model

    with torch.device("meta"):
        model = build_model(arch, weights="none")
        x = torch.rand(2, 1, image_size, image_size)
    model.train(backward)
    counter = FlopCounterMode(display=False)
    with counter:
        if backward:
            nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device="meta")).backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops() / 2


def throughput(marks: Sequence[float], batch_size: int) -> dict[str, float]:
    """Images per second from the times at which steps ended: the median step (robust to other
    processes briefly taking the CPU) and the mean over all timed steps."""
    steps = np.diff(np.asarray(marks))
    out = {"ips": batch_size / float(np.median(steps)), "ips_mean": batch_size / float(np.mean(steps))}
    out.update(spread(steps, batch_size))
    return out


def spread(steps: np.ndarray, batch_size: int, windows: int = 3) -> dict[str, Any]:
    """How far the measurement can be trusted: the timed steps cut into ``windows`` consecutive
    windows, each's images/s from its median step, and their range as a percentage of the
    overall median. A wide range means the machine was busy or the steps too few to steer by."""
    if len(steps) < windows:
        return {"ips_windows": [], "spread_pct": None}
    per = [batch_size / float(np.median(w)) for w in np.array_split(steps, windows)]
    middle = batch_size / float(np.median(steps))
    return {"ips_windows": per, "spread_pct": 100.0 * (max(per) - min(per)) / middle}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (numpy's linear interpolation)."""
    return float(np.percentile(np.asarray(values), q))


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, device, library versions, load average."""
    import onnxruntime
    import torchvision

    from brainmri.runtime import cpu_has_native_bf16, cpu_name

    cpu = cpu_name()
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info
