"""Hash slices as prepare sees them and group exact and near duplicates.

Prepare, the audit and the external-evaluation overlap check all decode, resize and hash a
slice here, so that an image counts as a duplicate in one place exactly when it does in the
others.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from brainmri.io.images import ImageError, read_gray_info
from brainmri.io.preprocess import resize


def decode_for_hashing(src: str, size: int, max_pixels: int) -> tuple[np.ndarray | None, dict[str, str]]:
    """Decode and resize one slice as prepare does: (array at ``size``, manifest fields), or
    (None, ``{"status": "unreadable: <reason>"}``). Shared by prepare and the audit, so that
    both hash exactly the same pixels."""
    try:
        gray, (width, height), mode = read_gray_info(src, max_pixels)
    except ImageError as exc:
        return None, {"status": f"unreadable: {exc}"}
    arr = resize(gray, size)
    pixel_hash, phash = image_hashes(arr)
    return arr, {
        "width": str(width),
        "height": str(height),
        "mode": mode,
        "pixel_hash": pixel_hash,
        "phash": phash,
        "status": "",
    }


def hash_one(task: tuple[str, int, int]) -> dict[str, str]:
    """Decode, resize and hash one slice without writing anything (the audit's worker)."""
    src, size, max_pixels = task
    return decode_for_hashing(src, size, max_pixels)[1]


#: ``prctl`` option: the signal the kernel sends a process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Process-pool initializer: end this worker when the process that started it ends, however
    it ends (SIGKILL included), instead of decoding on for nobody. On Linux the kernel sends
    SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread watches the parent's id. A parent
    gone before this ran is caught by comparing the parent's id."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:  # pragma: no cover - the project is tested on Linux
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def map_images(
    fn: Callable[[Any], dict[str, str]], tasks: Sequence[Any], workers: int | None, desc: str, progress: bool
) -> list[dict[str, str]]:
    """``[fn(t) for t in tasks]`` on a process pool of ``workers`` (default: all cores, at most
    8), in order, with a progress bar. ``imagehash`` is imported first, so forked workers
    inherit it instead of importing it each. Workers end with this process
    (:func:`die_with_parent`)."""
    import imagehash  # noqa: F401
    from tqdm import tqdm

    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), 8)
    results: list[dict[str, str]] = []
    with tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                for res in pool.map(fn, tasks, chunksize=16):
                    results.append(res)
                    bar.update()
        else:
            for t in tasks:
                results.append(fn(t))
                bar.update()
    return results


def image_hashes(arr: np.ndarray) -> tuple[str, str]:
    """(exact pixel hash, perceptual hash) of a slice already resized to the prepared size:
    what prepare groups duplicates by, and what :func:`brainmri.data.prepared.training_overlap` compares."""
    import imagehash

    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest(), str(imagehash.phash(Image.fromarray(arr)))


def duplicate_groups(pixel_hashes: Sequence[str], phashes: Sequence[str], threshold: int) -> list[int]:
    """Connected components over exact duplicates and phash pairs within ``threshold``: for each
    item, the smallest index of its group. ``threshold < 0`` groups exact duplicates only."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(pixel_hashes)
    if n == 0:
        return []
    first: dict[str, int] = {}
    rows = [first.setdefault(h, i) for i, h in enumerate(pixel_hashes)]
    edges = [(np.array(rows, dtype=np.int64), np.arange(n, dtype=np.int64))]
    if threshold >= 0 and n > 1:
        bits = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
        for start in range(0, n, 1024):
            block = bits[start : start + 1024]
            a, b = np.nonzero(np.bitwise_count(block[:, None] ^ bits[None, :]) <= threshold)
            edges.append((a + start, b))
    src = np.concatenate([e[0] for e in edges])
    dst = np.concatenate([e[1] for e in edges])
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels].tolist()
