"""Canonical class names and the aliases that public MRI datasets use for them.

Datasets name the same class differently (``no_tumor``, ``notumor``, ``healthy``...);
mapping every folder name onto four canonical labels keeps models, reports and
external test sets comparable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from brainmri.errors import BrainMRIError

#: Canonical labels, in the order of the model's outputs.
CLASSES: tuple[str, ...] = ("glioma_tumor", "meningioma_tumor", "pituitary_tumor", "normal")

#: Lower-case, separator-free alias -> canonical label.
ALIASES: dict[str, str] = {
    "glioma": "glioma_tumor",
    "gliomatumor": "glioma_tumor",
    "gliomatumour": "glioma_tumor",
    "glioma_tumor": "glioma_tumor",
    "meningioma": "meningioma_tumor",
    "meningiomatumor": "meningioma_tumor",
    "meningiomatumour": "meningioma_tumor",
    "pituitary": "pituitary_tumor",
    "pituitarytumor": "pituitary_tumor",
    "pituitarytumour": "pituitary_tumor",
    "pituitaryadenoma": "pituitary_tumor",
    "normal": "normal",
    "notumor": "normal",
    "notumour": "normal",
    "healthy": "normal",
    "nontumor": "normal",
    "negative": "normal",
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-\.]+", "", name.strip().lower())


def parse_label_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``--label-map`` (``"folder=label,other=label"``) into a validated mapping."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        pairs = []
        for item in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in item:
                raise BrainMRIError(
                    f"bad --label-map entry {item!r}: expected FOLDER=LABEL, e.g. 'tumor_g=glioma_tumor'"
                )
            src, dst = item.split("=", 1)
            pairs.append((src.strip(), dst.strip()))
    out: dict[str, str] = {}
    for src, dst in pairs:
        canon = ALIASES.get(_key(dst), dst if dst in CLASSES else None)
        if canon is None:
            raise BrainMRIError(f"--label-map maps {src!r} to unknown label {dst!r}; labels are: {', '.join(CLASSES)}")
        out[_key(src)] = canon
    return out


def canonical_label(name: str, label_map: Mapping[str, str] | None = None) -> str:
    """Map a folder name to a canonical label, or fail with a message that says how to fix it."""
    key = _key(name)
    if label_map and key in label_map:
        return label_map[key]
    if key in ALIASES:
        return ALIASES[key]
    known = sorted({*ALIASES.keys()})
    raise BrainMRIError(
        f"unknown class folder {name!r}; known names: {', '.join(known)}; "
        f"map it with --label-map '{name}=<one of {'|'.join(CLASSES)}>'"
    )


def is_known_label(name: str, label_map: Mapping[str, str] | None = None) -> bool:
    key = _key(name)
    return bool(label_map and key in label_map) or key in ALIASES
