"""Figures and report rendering from predictions made up in the test (no model needed)."""

from __future__ import annotations

import base64
import re

import numpy as np
from PIL import Image

from brainmri.labels import CLASSES
from brainmri.metrics.classification import compute_metrics
from brainmri.render.document import render_report
from brainmri.render.figures import FIGURES, make_figures


def _predictions(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a better-than-chance classifier; the last class never occurs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), y] += 2.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def _is_png(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
        return img.size


def test_figures_are_valid_pngs_of_every_kind(tmp_path):
    y, proba = _predictions()
    metrics = compute_metrics(y, proba, CLASSES, n_bootstrap=50)
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 0.5 / e, "val_acc": 1 - 0.6 / e}
        for e in range(1, 4)
    ]
    figs = make_figures(tmp_path, metrics, y, proba, history, title="resnet50")
    assert sorted(figs) == sorted(FIGURES)
    for name, path in figs.items():
        assert path == tmp_path / name
        width, height = _is_png(path)
        assert width > 300 and height > 300, name  # readable, not a thumbnail
    # Without a training history there is no curves figure, the rest still is drawn.
    figs = make_figures(tmp_path / "no_history", metrics, y, proba, None)
    assert "curves.png" not in figs and len(figs) == len(FIGURES) - 1


def test_report_markdown_links_and_html_embeds_every_figure(tmp_path):
    y, proba = _predictions()
    metrics = compute_metrics(y, proba, CLASSES, n_bootstrap=50)
    figs = make_figures(tmp_path / "runs" / "a" / "figures", metrics, y, proba, None)
    sections = [
        {"heading": "Not for clinical use", "notice": True, "text": ["Research software <b>only</b>."]},
        {"heading": "Results", "table": (["Model", "Accuracy"], [["ResNet-50", "0.917"], ["ResNet-101", "0.900"]])},
        {"heading": "Figures", "figures": [(name, path) for name, path in figs.items()], "bullets": ["one", "two"]},
    ]
    md_path, html_path = render_report(tmp_path, sections, title="test report")
    md = md_path.read_text()
    assert "| Model | Accuracy |" in md and "| ResNet-101 | 0.900 |" in md
    for name in figs:
        assert f"(runs/a/figures/{name})" in md  # relative links, so the folder can be moved
    page = html_path.read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(figs)
    assert base64.b64decode(uris[0]) == figs["confusion_matrix.png"].read_bytes()
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "&lt;b&gt;only&lt;/b&gt;" in page  # text is escaped, not injected as markup
    assert page.count("<tr>") == 3


def test_report_says_where_a_run_departs_from_the_paper():
    from brainmri.config import TrainConfig
    from brainmri.reports.paper import paper_comparability as _paper_comparability

    paper = TrainConfig().to_dict()
    bullets = _paper_comparability(paper, None, {"kept": 2702})
    assert len(bullets) == 1 and "at least 226 exact duplicates" in bullets[0] and "2,702 images" in bullets[0]
    quick = {**paper, "image_size": 64, "epochs": 3, "weights": "none"}
    first = _paper_comparability(quick, 5, {"kept": 2702})[0]
    assert first.startswith("Settings differ from the paper's: ")
    for part in ("image size 64 (paper: 256)", "epochs 3 (paper: 10)", "weights none", "5-fold cross-validation"):
        assert part in first
    assert "batch size" not in first and "lr" not in first
