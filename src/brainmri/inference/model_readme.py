"""The ``README.md`` of a folder export: the model card for people, beside its JSON for programs.

Written from the card alone, so that what it says is what the model carries. Every value is
put on one line with its control characters escaped (:func:`brainmri.files.one_line`): a card
may come from anyone, and its text must not make headings or links of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainmri.files import one_line


def _text(value: Any) -> str:
    return one_line(str(value)).replace("|", "\\|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return _text(value)


def _table(mapping: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    rows = [(k, v) for k, v in mapping.items() if k not in skip and not isinstance(v, dict)]
    if not rows:
        return ["(not recorded)"]
    return ["| | |", "|---|---|", *[f"| {_text(k)} | {_fmt(v)} |" for k, v in rows]]


def model_readme(card: Mapping[str, Any], files: list[str]) -> str:
    """The folder's README: what the model is, its classes and input, how it was trained, its
    metrics (those the card carries), its input check, how to use it, and the notice."""
    arch, size = card.get("arch", "?"), card.get("image_size", "?")
    name = _text(card.get("name", f"brainmri-{arch}"))
    notice = _text(card.get("notice", ""))
    lines = [
        f"# {name}",
        "",
        f"> **{notice}**",
        "",
        f"A {_text(arch)} classifier of single brain MRI slices, trained with brainmri. "
        f"{_text(card.get('intended_use', ''))}",
        "",
        "## Classes (output order)",
        "",
        *[f"{i}. `{_text(c)}`" for i, c in enumerate(card.get("classes", []))],
        "",
        "## Input",
        "",
        f"One slice as a float32 tensor (N, 1, {size}, {size}) with values in [0, 1]; the network "
        "replicates the channel and normalises it itself.",
        "",
        *_table(card.get("preprocessing") or {}),
        "",
    ]
    extras = []
    if card.get("tta"):
        extras.append(f"Probabilities are averaged with the mirror image's ({_text(card['tta'])}), as validated.")
    if card.get("temperature"):
        fitted = (card.get("calibration") or {}).get("fitted_on", "the validation side")
        extras.append(f"Temperature scaling: T = {_fmt(card['temperature'])}, fitted on {_text(fitted)}.")
    explanation = card.get("explanation")
    if isinstance(explanation, dict) and explanation.get("chosen"):
        extras.append(f"Explanations: {_text(explanation['chosen'])} (chosen against tumour boxes).")
    if extras:
        lines += [*extras, ""]
    lines += [
        "## Training",
        "",
        f"Weights: {_text(card.get('weights_origin', card.get('weights', '?')))}; "
        f"fine-tuning: {_text(card.get('finetune', '?'))}.",
        "",
    ]
    data = card.get("training_data") or {}
    if data:
        lines += ["Training data:", "", *_table(data), ""]
        if isinstance(data.get("counts"), dict):
            lines += ["Images per class:", "", *_table(data["counts"]), ""]
    split = card.get("split") or {}
    if split:
        lines += ["Split:", "", *_table(split), ""]
    config = card.get("config") or {}
    keys = ("epochs", "batch_size", "lr", "optimizer", "schedule", "image_size", "seed", "precision")
    chosen = {k: config[k] for k in keys if k in config}
    if chosen:
        lines += ["Settings:", "", *_table(chosen), ""]
    lines += ["## Metrics", ""]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += _table(metrics)
        for where, record in (metrics.get("external") or {}).items():
            if isinstance(record, dict):
                lines += ["", f"On `{_text(where)}`:", "", *_table(record)]
    else:
        lines.append("(none recorded)")
    lines += ["", "## Input check", ""]
    check = card.get("input_check")
    if isinstance(check, dict) and check.get("threshold") is not None:
        lines.append(
            f"Each prediction carries a warning when the slice is not like the training images: cheap checks "
            f"(size, near-constant, colour), the slice's own statistics, and the Mahalanobis distance of the "
            f"model's features (threshold {_fmt(check['threshold'])}, percentile {_fmt(check.get('percentile'))} "
            "of cross-fitted training scores)."
        )
    else:
        lines.append("Size, near-constant and colour checks only (the model was not calibrated).")
    lines += [
        "",
        "## Use",
        "",
        "```",
        "brainmri predict THIS_FOLDER slice.png",
        "brainmri serve THIS_FOLDER",
        "```",
        "",
        "or in Python: `brainmri.Predictor('THIS_FOLDER')`. Loading reads JSON and safetensors only: nothing "
        "is unpickled.",
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "",
        "## Limitations",
        "",
        _text(card.get("limitations", "")),
        "",
        f"**{notice}**",
        "",
    ]
    return "\n".join(lines)
