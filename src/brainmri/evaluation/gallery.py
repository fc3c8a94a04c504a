"""The failure gallery: every misclassified held-out image of a run, with its true and
predicted label, the probability the model gave its (wrong) answer, and the Grad-CAM
overlay of that answer. Readers of a report look rather than read.

The list comes from the run's ``predictions.csv`` (what ``evaluate`` wrote), so the
gallery shows exactly the images the metrics counted as errors.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.files import atomic_write_text
from brainmri.rundir import RunDir

#: The grid shows at most this many images, the most confident mistakes first;
#: ``failures.csv`` always lists them all.
MAX_TILES = 60
COLUMNS = 6
#: Slices per Grad-CAM pass: bounds the memory of a ResNet-152 backward at 256 px.
SALIENCY_BATCH = 16
FAILURES_PNG = "failures.png"
FAILURES_CSV = "failures.csv"


def misclassified(predictions: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``predictions.csv`` whose prediction is wrong, most confident first."""
    with Path(predictions).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    wrong = []
    for r in rows:
        if r["label"] != r["predicted"]:
            p = float(r[f"p_{r['predicted']}"])
            wrong.append({"path": r["path"], "label": r["label"], "predicted": r["predicted"], "probability": p})
    return sorted(wrong, key=lambda r: (-r["probability"], r["path"]))


def _write_list(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "predicted", "probability"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "probability": f"{r['probability']:.6f}"} for r in rows)
    atomic_write_text(path, buf.getvalue())


def _heatmaps(run: RunDir, rows: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(slice, map overlay of the predicted class) for each row, at the model's size (the
    explanation method the card names, else the default)."""
    from brainmri.data.prepared import load_split
    from brainmri.inference.explain import DEFAULT_EXPLAINER, Explainer, overlay, saliency_in_batches
    from brainmri.inference.run_record import Run
    from brainmri.models.checkpoint import load_model

    model, card = load_model(run.best)
    record = Run.read(run.path, card)  # its prepared folder: a clear line if it has moved
    images, _, paths = load_split(record.prepared, run.split, "test", size=card["image_size"])
    index = {p: i for i, p in enumerate(paths)}
    chosen = (card.get("explanation") or {}).get("chosen")
    explainer = Explainer.parse(chosen) if chosen else DEFAULT_EXPLAINER
    classes = list(card["classes"])
    grays = images[[index[r["path"]] for r in rows]]
    targets = [classes.index(r["predicted"]) for r in rows]
    heats = saliency_in_batches(model, grays, targets, [explainer], SALIENCY_BATCH)[explainer.name]
    return [(g[0].numpy(), overlay(g[0].numpy(), h)) for g, h in zip(grays, heats, strict=True)]


def _short(name: str) -> str:
    return name.removesuffix("_tumor").replace("_", " ")


def mosaic(overlays: list[np.ndarray], columns: int = COLUMNS) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Square uint8 (S, S, 3) overlays laid out row by row on white, with a band above each for
    its caption -> (the image, (S, cell width, cell height, band height))."""
    side = overlays[0].shape[0] if overlays else 1
    band, gap = round(side * 0.32), max(1, round(side * 0.06))  # caption band above a tile, gap between tiles
    cell_w, cell_h = side + gap, side + band
    n_rows = max(1, -(-len(overlays) // columns))
    grid = np.full((n_rows * cell_h, columns * cell_w - gap, 3), 255, dtype=np.uint8)
    for i, over in enumerate(overlays):
        top, left = (i // columns) * cell_h + band, (i % columns) * cell_w
        grid[top : top + side, left : left + side] = over
    return grid, (side, cell_w, cell_h, band)


def draw_grid(tiles: list[tuple[np.ndarray, np.ndarray]], rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """A grid of overlays, each captioned with the true label, the prediction and its probability.

    The grid is one image (the overlays laid side by side, a band above each for its caption)
    in one set of axes: sixty axes cost matplotlib about two seconds a grid, one a fraction."""
    from brainmri.render.figures import _save, figure

    grid, (side, cell_w, cell_h, band) = mosaic([over for _, over in tiles])
    n_rows = grid.shape[0] // cell_h
    fig = figure(figsize=(COLUMNS * 1.9, n_rows * 2.2 + 0.6))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.6 / (n_rows * 2.2 + 0.6)))
    ax.imshow(grid)
    ax.set_axis_off()
    for i, r in enumerate(rows[: len(tiles)]):
        x, y = (i % COLUMNS) * cell_w + side / 2, (i // COLUMNS) * cell_h + band * 0.92
        caption = f"true {_short(r['label'])}\npred {_short(r['predicted'])} ({r['probability']:.2f})"
        ax.text(x, y, caption, fontsize=7.5, ha="center", va="bottom")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def failure_gallery(run_dir: str | Path, title: str = "") -> dict[str, Any]:
    """Write ``figures/failures.png`` (the grid) and ``figures/failures.csv`` (every
    misclassified held-out image) for an evaluated run; returns what it drew."""
    run = RunDir(run_dir)
    rows = misclassified(run.predictions)
    run.figures.mkdir(parents=True, exist_ok=True)
    _write_list(run.figures / FAILURES_CSV, rows)
    shown = rows[:MAX_TILES]
    result: dict[str, Any] = {"misclassified": len(rows), "shown": len(shown), "csv": str(run.figures / FAILURES_CSV)}
    if not shown:
        return {**result, "figure": None}
    tiles = _heatmaps(run, shown)
    more = f"; the {len(shown)} most confident shown, all in {FAILURES_CSV}" if len(rows) > len(shown) else ""
    heading = f"{title}: " if title else ""
    caption = f"{heading}{len(rows)} misclassified held-out images (Grad-CAM of the predicted class){more}"
    path = draw_grid(tiles, shown, caption, run.figures / FAILURES_PNG)
    return {**result, "figure": str(path)}
