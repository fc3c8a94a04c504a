"""How well the input check separates non-MRI images from MRI slices, on a run folder.

``brainmri calibrate RUN --measure EXTERNAL`` (or :func:`measure_input_check`) runs the
same path as ``predict`` on four sets and counts the images flagged:

* the sample images that scikit-image ships inside its wheel (photographs, text, a retina,
  histology, a Shepp-Logan phantom: an offline source of non-MRI images; ``pip install
  scikit-image``);
* made-up images: noise, gradients, text, and the degenerate cases (1x1, blank, constant
  16-bit);
* the run's own held-out test side (MRI slices from the training source, never trained on);
* an external folder of MRI slices from other sources (e.g. brain-tumor-mri-external).

A file that cannot be decoded is counted as refused (predict gives it an error row, no
prediction), not as flagged.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from brainmri.errors import BrainMRIError
from brainmri.inference.run_record import Run
from brainmri.io.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from brainmri.inference.predictor import Predictor


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def made_up_images(n: int = 8, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` each of uniform noise, Gaussian noise, linear and radial gradients and text pages,
    plus a 1x1 image, a blank PNG and a constant 16-bit PNG, as PNG files in memory."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        side = int(rng.integers(128, 600))
        out.append((f"noise-uniform-{i}", _png(rng.integers(0, 256, (side, side), dtype=np.uint8))))
        gauss = np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (side, side)), 0, 255)
        out.append((f"noise-gaussian-{i}", _png(gauss.astype(np.uint8))))
        ramp = np.linspace(rng.uniform(0, 100), rng.uniform(150, 255), side)
        linear = np.tile(ramp, (side, 1)) if i % 2 else np.tile(ramp[:, None], (1, side))
        out.append((f"gradient-linear-{i}", _png(linear.astype(np.uint8))))
        yy, xx = np.mgrid[:side, :side]
        radial = 255 * np.hypot(yy - side * rng.uniform(0.3, 0.7), xx - side / 2) / side
        out.append((f"gradient-radial-{i}", _png(np.clip(radial, 0, 255).astype(np.uint8))))
        page = Image.new("L", (side, side), 255 if i % 2 else 0)
        draw = ImageDraw.Draw(page)
        for line in range(side // 28):
            draw.text((8, 6 + 28 * line), f"Report {i}.{line}: findings and impression", fill=0 if i % 2 else 255)
        out.append((f"text-{i}", _png(np.asarray(page))))
    out.append(("one-pixel", _png(np.zeros((1, 1), dtype=np.uint8))))
    out.append(("blank", _png(np.full((256, 256), 255, dtype=np.uint8))))
    out.append(("constant-16-bit", _png(np.full((256, 256), 1000, dtype=np.uint16))))
    return out


def skimage_images() -> list[tuple[str, Path]]:
    """Every image file shipped in scikit-image's ``data`` folder (no download)."""
    try:
        import skimage.data
    except ImportError:
        raise BrainMRIError("the measurement needs scikit-image's sample images: pip install scikit-image") from None
    folder = Path(skimage.data.__file__).parent
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".gif", ".tif"))
    return [(p.name, p) for p in files]


def _folder_images(folder: Path) -> list[tuple[str, Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BrainMRIError(f"no images in {folder}")
    return [(str(p.relative_to(folder)), p) for p in files]


def _held_out(run_dir: Path) -> list[tuple[str, Path]]:
    """The run's test side (prepared PNGs), or [] when the run folder does not say where it is."""
    from brainmri.data.splitfile import select_split

    run = Run.read(run_dir, card={})
    rows = run.split
    if run.data is None or rows is None or "fold" in rows[0]:  # a k-fold file has no one test side
        return []
    return [(r["path"], run.data / r["path"]) for r in select_split(rows, "test")]


#: The reasons counted, as the warnings word them.
REASONS = ("too small", "near-constant", "grey levels", "in colour", "image statistics", "out of distribution")


def count_flagged(
    predictor: Predictor, images: Iterable[tuple[str, str | Path | bytes]], batch_size: int = 32
) -> dict[str, Any]:
    """Classify ``images`` (name, file or bytes) with ``predictor``; counts of flagged images by
    reason. Files are read as predict reads them (regular files only, size-capped)."""
    images = list(images)
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        rows += predictor.predict_sources([b for _, b in chunk], [n for n, _ in chunk])
    ok = [r for r in rows if r.ok]
    flagged = [r for r in ok if r.input_warning]
    reasons: dict[str, int] = {}
    for r in flagged:
        warning = r.input_warning or ""
        for key in REASONS:
            if key in warning:
                reasons[key] = reasons.get(key, 0) + 1
    return {
        "files": len(rows),
        "refused": len(rows) - len(ok),
        "classified": len(ok),
        "flagged": len(flagged),
        "share_flagged": len(flagged) / len(ok) if ok else None,
        "by_reason": reasons,
        "not_flagged": [r.name for r in ok if not r.input_warning][:50],
    }


def measure_input_check(
    model: str | Path, external: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32
) -> dict[str, Any]:
    """The share flagged of each set (see the module docstring) for a run folder or checkpoint."""
    from brainmri.inference.predictor import Predictor

    predictor = Predictor(model, device=device)
    run_dir = Path(model) if Path(model).is_dir() else Path(model).parent.parent
    sets: dict[str, Sequence[tuple[str, str | Path | bytes]]] = {
        "scikit-image samples": skimage_images(),
        "made-up images": made_up_images(),
    }
    held = _held_out(run_dir)
    if held:
        sets["held-out test side"] = held
    if external is not None:
        sets["external MRI"] = _folder_images(Path(external))
    return {
        "model": str(model),
        "checks": predictor.input_check.status,
        "threshold": predictor.input_check.threshold,
        "sets": {name: count_flagged(predictor, imgs, batch_size) for name, imgs in sets.items()},
    }


def format_measure(result: dict[str, Any]) -> str:
    """The measurement as a small table."""
    lines = [f"input check of {result['model']}: {result['checks']}", ""]
    lines.append(f"{'set':<24}{'files':>7}{'refused':>9}{'flagged':>9}{'share':>8}  by reason")
    for name, s in result["sets"].items():
        share = "-" if s["share_flagged"] is None else f"{s['share_flagged']:.1%}"
        why = ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
        lines.append(f"{name:<24}{s['files']:>7}{s['refused']:>9}{s['flagged']:>9}{share:>8}  {why}")
    return "\n".join(lines)
