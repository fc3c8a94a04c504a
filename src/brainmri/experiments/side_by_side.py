"""Several runs of an experiment at once on a CPU machine, each in its own process with an
equal share of the cores.

On 2 cores a ResNet training step gains little from a second thread at small image sizes: two
1-thread processes train 1.35x as many images a second as one 2-thread process at 64 px, and
1.1x at 128 px (docs/results/threads-two-runs). A comparison of several runs therefore finishes
sooner with its runs side by side. The caller orders the calls (longest first keeps every
process busy until the end); each process prints its own lines; the first failure cancels the
calls not yet started and is raised here, after the running ones have stopped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from brainmri.errors import BrainMRIError
from brainmri.runtime import usable_cpus


def check_jobs(jobs: int, device: str) -> int:
    """``jobs`` if it is between 1 and the usable CPUs, and only 1 on a GPU (runs side by side
    would share the one device)."""
    from brainmri.runtime import resolve_device

    limit = usable_cpus()
    if not 1 <= jobs <= limit:
        raise BrainMRIError(f"--jobs must be between 1 and {limit} (the CPUs this process may use), got {jobs}")
    if jobs > 1 and resolve_device(device).type != "cpu":
        raise BrainMRIError(f"--jobs runs several trainings at once on the CPU; with --device {device} use 1")
    return jobs


def longest_first(archs: Sequence[str]) -> list[str]:
    """``archs`` by parameter count, largest first (a proxy for training time among ResNets),
    counted on the meta device: no weights are made."""
    import torch

    from brainmri.models.build import build_model

    def size(arch: str) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(arch, weights="none").parameters())

    return sorted(archs, key=size, reverse=True)


def say(message: str) -> None:
    """The log of a run side by side: its own line at once (``print`` to a file or pipe waits
    for its buffer to fill, so the lines of two processes would come late and out of order)."""
    print(message, flush=True)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_side_by_side(function: Callable[..., Any], calls: Sequence[Mapping[str, Any]], jobs: int) -> list[Any]:
    """``[function(**kwargs) for kwargs in calls]``, with up to ``jobs`` calls running at once in
    fresh processes of ``usable_cpus() // jobs`` PyTorch threads each (in this process, one
    after the other, when ``jobs`` is 1). ``function`` and the arguments must pickle: a
    module-level function, plain values, paths, configs."""
    if jobs <= 1 or len(calls) <= 1:
        return [function(**kwargs) for kwargs in calls]
    workers = min(jobs, len(calls))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copied thread pools
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_limit_threads, initargs=(max(1, usable_cpus() // workers),)
    )
    try:
        futures: list[Future[Any]] = [pool.submit(function, **kwargs) for kwargs in calls]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    except BrokenProcessPool:
        raise BrainMRIError(
            "a process running trainings side by side ended without a result (killed, or out of memory?); "
            "rerun the same command to resume, or use --jobs 1"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
