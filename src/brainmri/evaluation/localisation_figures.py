"""Figures of where a model looks: slices with the tumour's box (green), the map overlaid and
its maximum (a white cross); the worst misses and a sample of typical hits and misses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from brainmri.metrics.localisation import Box, miss_distance, peak, pointing_hit
from brainmri.render.figures import _save, figure


def _tile(ax, gray: np.ndarray, heat: np.ndarray, box: Box, caption: str) -> None:
    size = gray.shape[0]
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    x0, y0, x1, y1 = box.pixels(size)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))
    r, c = peak(heat)
    ax.plot([c], [r], marker="x", color="white", markersize=7, markeredgewidth=2)
    ax.set_title(caption, fontsize=7)
    ax.set_axis_off()


def _grid(path: Path, tiles: list[tuple[np.ndarray, np.ndarray, Box, str]], title: str, cols: int = 4) -> Path:
    rows = max(1, -(-len(tiles) // cols))
    fig = figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, tile in zip(axes, tiles, strict=False):
        _tile(ax, *tile)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def misses_figure(path, arrays, kept, maps, indices: Sequence[int], name: str, classes, predicted, n: int = 8) -> Path:
    """The ``n`` slices whose map maximum lies farthest from the box."""
    order = sorted(indices, key=lambda i: -miss_distance(maps[i], kept[i][0]))[:n]
    tiles = [
        (arrays[i], maps[i], kept[i][0],
         f"{Path(kept[i][0].file).name}\ntrue {kept[i][0].label}, pred {classes[predicted[i]].removesuffix('_tumor')}")
        for i in order
    ]  # fmt: skip
    return _grid(Path(path), tiles, f"{name}: the {len(tiles)} worst misses (box green, map maximum x)")


def examples_figure(path, arrays, kept, maps, indices: Sequence[int], name: str, tolerance: float) -> Path:
    """Four hits and four misses drawn at random (fixed seed) from ``indices``."""
    rng = np.random.default_rng(0)
    hits = [i for i in indices if pointing_hit(maps[i], kept[i][0], tolerance)]
    misses = [i for i in indices if not pointing_hit(maps[i], kept[i][0], tolerance)]
    pick = [*rng.permutation(hits)[:4].tolist(), *rng.permutation(misses)[:4].tolist()]
    tiles = [
        (arrays[i], maps[i], kept[i][0], f"{'hit' if i in hits else 'miss'}: {Path(kept[i][0].file).name}")
        for i in pick
    ]
    return _grid(Path(path), tiles, f"{name}: typical hits and misses (box green, map maximum x)")
