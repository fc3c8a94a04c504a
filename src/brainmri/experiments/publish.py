"""Copying a finished results folder into the repository (``docs/results/``): every record a
number can be recomputed from (configs, splits, logs, histories, metrics, predictions,
reports, figures), and nothing heavy: no checkpoints, no TensorBoard files, no self-contained
HTML copies (the Markdown report links the same figures). Figures over
:data:`MAX_FIGURE_BYTES` are re-encoded with fewer colours until they fit.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from PIL import Image

from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_bytes
from brainmri.rundir import TRAIN_LOG

MAX_FIGURE_BYTES = 200_000
#: What is never published: weights, event files, and HTML reports with embedded images.
SKIP_DIRS = {"checkpoints", "tensorboard", "prepared-256", "__pycache__"}
SKIP_SUFFIXES = {".pt", ".pth", ".safetensors", ".onnx", ".html"}


def shrink_png(path: Path, limit: int = MAX_FIGURE_BYTES) -> int:
    """Re-encode a PNG with a palette of fewer colours until it is at most ``limit`` bytes;
    returns its size."""
    size = path.stat().st_size
    colours = 256
    while size > limit and colours >= 16:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        buf = io.BytesIO()
        rgb.quantize(colors=colours).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(path, buf.getvalue())
        size = len(buf.getvalue())
        colours //= 2
    return size


def publish(src: str | Path, dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the records of ``src`` into ``dest``; returns the files written."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise BrainMRIError(f"results folder not found: {src}")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise BrainMRIError(f"{dest} already exists; pass --overwrite to replace it")
    if dest.exists():
        shutil.rmtree(dest)
    # A run still training (a train.log or checkpoints, no summary yet; before its first
    # checkpoint it has only its records and log) has no numbers to publish: left out, so that
    # its half-written log and history are not taken for a result.
    started = {p.parent for name in ("checkpoints", TRAIN_LOG) for p in src.rglob(name)}
    unfinished = [run for run in started if not (run / "summary.json").is_file()]
    written = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in SKIP_DIRS for part in rel.parts) or path.suffix in SKIP_SUFFIXES or not path.is_file():
            continue
        if any(path.is_relative_to(run) for run in unfinished):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        if target.suffix == ".png":
            shrink_png(target)
        written.append(target)
    return written
