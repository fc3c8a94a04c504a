"""``brainmri data audit``: run the audit (:mod:`brainmri.data.audit`) and write its record and report.

OUT receives ``audit.json`` (the whole audit), ``audit.md`` and a self-contained
``audit.html`` with two figures: example duplicate pairs that cross folders, and the share of
each class of every test-like folder that has a copy in a training folder. OUT is built in a
hidden sibling folder and renamed into place, and an existing OUT is replaced only with
``overwrite`` (and only if it holds an audit).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.data import hashing
from brainmri.data import prepare as preparation
from brainmri.data.audit import run_audit, scan_sources
from brainmri.errors import BrainMRIError
from brainmri.files import atomic_write_bytes, publish_dir, staging_dir, write_json
from brainmri.io.images import MAX_PIXELS
from brainmri.io.preprocess import DEFAULT_SIZE
from brainmri.labels import CLASSES
from brainmri.render.document import render_report
from brainmri.render.figures import _save, _short, figure

AUDIT_JSON = "audit.json"
PAIRS_PNG = "duplicate_pairs.png"
LEAKAGE_PNG = "leakage_per_class.png"
#: Rows a report table shows before it points to audit.json for the rest.
TABLE_ROWS = 25


def check_out(out: Path, sources: Sequence[str | Path], overwrite: bool) -> None:
    """OUT must lie outside every source (which the audit never writes) and may replace only an
    earlier audit, and only with ``overwrite``."""
    out_r = out.resolve()
    for src in sources:
        src_r = Path(src).resolve()
        if out_r == src_r or src_r in out_r.parents or out_r in src_r.parents:
            raise BrainMRIError(f"--out {out} must lie outside the source folder {src} (sources are only read)")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise BrainMRIError(f"output {out} already exists; pass --overwrite to replace it")
        if not out.is_dir() or (any(out.iterdir()) and not (out / AUDIT_JSON).is_file()):
            raise BrainMRIError(f"output {out} exists and is not an audit folder; refusing to replace it")


def audit(
    sources: Sequence[str | Path],
    out: str | Path,
    size: int = DEFAULT_SIZE,
    phash_threshold: int = preparation.PHASH_THRESHOLD,
    label_map: str | Mapping[str, str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, Any]:
    """Audit ``sources`` into ``out`` (audit.json, audit.md, audit.html); returns the audit.

    Every check (sources, settings, OUT) comes before any image is hashed, so bad input costs
    nothing and writes nothing."""
    out = Path(out)
    preparation.check_prepare_settings(size, phash_threshold)
    records = scan_sources(sources, label_map)
    check_out(out, sources, overwrite)
    result = run_audit(sources, size, phash_threshold, label_map, workers, progress, max_pixels, records=records)
    tmp = staging_dir(out)
    try:
        write_json(tmp / AUDIT_JSON, result)
        figures = {
            "pairs": plot_pairs(result, tmp / PAIRS_PNG) if result["examples"] else None,
            "leakage": plot_leakage(result, tmp / LEAKAGE_PNG) if result["test_images_leaked"]["images"] else None,
        }
        render_report(tmp, report_sections(result, figures), title="Dataset audit", name="audit")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


# --- figures --------------------------------------------------------------------------


def _thumb(result: dict[str, Any], member: dict[str, Any]) -> np.ndarray:
    """A member's pixels as they were hashed (grayscale at the audit size)."""
    root = next(d["path"] for d in result["datasets"] if d["name"] == member["dataset"])
    settings = result["settings"]
    arr, _ = hashing.decode_for_hashing(str(Path(root) / member["path"]), settings["size"], settings["max_pixels"])
    return arr if arr is not None else np.zeros((settings["size"],) * 2, dtype=np.uint8)


def plot_pairs(result: dict[str, Any], path: Path) -> Path:
    """Example duplicate pairs from different folders, each pair side by side with the folder,
    label and file of both images and how alike they are (label conflicts in red)."""
    pairs = result["examples"]
    per_row = 2 if len(pairs) > 1 else 1
    rows = (len(pairs) + per_row - 1) // per_row
    ratios = [1, 1, 0.18, 1, 1][: 3 * per_row - 1]  # a gap between pairs
    fig = figure(figsize=(2.2 * 2 * per_row, 2.75 * rows))
    axes = fig.subplots(rows, len(ratios), squeeze=False, width_ratios=ratios)
    for ax in axes.flat:
        ax.axis("off")
    for i, pair in enumerate(pairs):
        kind = "exact copy" if pair["exact"] else f"near copy, phash distance {pair['phash_distance']}"
        conflict = pair["a"]["label"] != pair["b"]["label"]
        for j, m in enumerate((pair["a"], pair["b"])):
            ax = axes[i // per_row, 3 * (i % per_row) + j]
            ax.imshow(_thumb(result, m), cmap="gray", vmin=0, vmax=255)
            name = Path(m["path"]).name
            ax.set_title(
                f"{m['folder']}\n{_short(m['label'])} · {name if len(name) <= 24 else name[:21] + '...'}",
                fontsize=6.5,
                color="firebrick" if conflict else "black",
            )
        axes[i // per_row, 3 * (i % per_row)].text(
            1.0,
            -0.04,
            kind + (": LABELS DIFFER" if conflict else ""),
            transform=axes[i // per_row, 3 * (i % per_row)].transAxes,
            ha="center",
            va="top",
            fontsize=7,
            color="firebrick" if conflict else "black",
        )
    fig.suptitle("Duplicates in different folders (examples; every group is in audit.json)", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.35 / rows, bottom=0.03, hspace=0.42, wspace=0.04)
    return _save_small(fig, path)


def _save_small(fig: Any, path: Path) -> Path:
    """A figure of grayscale slices at 80 dpi on a palette of 128 grays and the red of label
    conflicts: a third of the size of matplotlib's RGBA, so the report that embeds it stays small."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    colours = [(v, v, v) for v in np.linspace(0, 255, 128).round().astype(int).tolist()]
    colours += [(round(255 - t * 77), round(255 - t * 221), round(255 - t * 221)) for t in (0.25, 0.5, 0.75, 1)]
    palette = Image.new("P", (1, 1))
    palette.putpalette([c for rgb in colours for c in rgb])
    small = io.BytesIO()
    image = Image.open(buf).convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    image.save(small, format="PNG", optimize=True)
    atomic_write_bytes(path, small.getvalue())
    return path


def plot_leakage(result: dict[str, Any], path: Path) -> Path:
    """Per class, the share of each test-like folder's images that has a copy in a training
    folder, with the counts on the bars."""
    from matplotlib.ticker import FuncFormatter

    folders = result["test_images_leaked"]["folders"]
    x = np.arange(len(CLASSES))
    width = 0.8 / max(1, len(folders))
    fig = figure(figsize=(8, 3.8))
    ax = fig.subplots()
    for i, f in enumerate(folders):
        counts = [f["per_class"].get(c, {"images": 0, "leaked": 0}) for c in CLASSES]
        heights = [c["leaked"] / c["images"] if c["images"] else np.nan for c in counts]
        bars = ax.bar(x + (i - (len(folders) - 1) / 2) * width, heights, width, label=f["folder"])
        labels = [f"{c['leaked']}/{c['images']}" if c["images"] else "–" for c in counts]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(x, [_short(c) for c in CLASSES])
    ax.set_ylabel("test images with a copy in training")
    ax.set_ylim(0, 1.12)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=min(3, len(folders)), frameon=False)
    ax.set_title("Leakage per class: test images that also sit, as a copy, in a training folder", fontsize=9)
    return _save(fig, path)


# --- report ---------------------------------------------------------------------------


def _share(leaked: int, images: int) -> str:
    return f"{leaked}/{images} ({leaked / images:.1%})" if images else "–"


def _groups_table(result: dict[str, Any], ids: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Group id, size, kind, labels and (the first few) members of the groups ``ids``."""
    by_id = {g["id"]: g for g in result["duplicate_groups"]}
    rows = []
    for gid in ids[:TABLE_ROWS]:
        g = by_id[gid]
        far = max(m["phash_distance"] for m in g["members"])
        members = "; ".join(f"{m['dataset']}: {m['path']} ({_short(m['label'])})" for m in g["members"][:4])
        rows.append(
            [
                gid,
                str(g["size"]),
                "exact" if g["exact"] else f"near (phash distance up to {far})" if far else "near (same phash)",
                members + (f"; and {g['size'] - 4} more" if g["size"] > 4 else ""),
            ]
        )
    return ["group", "images", "kind", "members (dataset: file (label))"], rows


def _more(ids: Sequence[Any]) -> list[str]:
    return [f"The first {TABLE_ROWS} of {len(ids)} are shown; audit.json lists all."] if len(ids) > TABLE_ROWS else []


def _summary_bullets(result: dict[str, Any]) -> list[str]:
    images, leak = result["images"], result["test_images_leaked"]
    bullets = [
        f"{images['files']} image files in {len(result['datasets'])} dataset(s) and {len(result['folders'])} "
        f"folder(s); {images['unreadable']} unreadable",
        f"{len(result['duplicate_groups'])} duplicate groups (exact or perceptual-hash distance <= "
        f"{result['settings']['phash_threshold']}) holding {images['in_duplicate_groups']} images, "
        f"{images['redundant_copies']} of them copies of another",
        f"{len(result['cross_folder_groups'])} groups cross split folders; {len(result['cross_dataset_groups'])} "
        f"cross datasets; {len(result['label_conflicts'])} carry conflicting labels",
    ]
    if leak["folders"]:
        bullets.append(
            f"Test images with a copy in a training folder: {_share(leak['leaked'], leak['images'])}"
            + "".join(f"; {f['folder']}: {_share(f['leaked'], f['images'])}" for f in leak["folders"])
        )
    else:
        bullets.append("No test-like folder (Testing/, test/, validation/ ...): no train/test leakage to measure")
    return bullets


def _folder_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["folder", "role", "files", "unreadable", *map(_short, CLASSES), "dup. groups", "copies (exact/near)"]
    header.append("in groups shared with other folders")
    rows = [
        [
            f["folder"],
            f["role"],
            str(f["files"]),
            str(f["unreadable"]),
            *(str(f["per_class"][c]) for c in CLASSES),
            str(f["duplicate_groups"]),
            f"{f['duplicate_images']} ({f['exact_copies']}/{f['near_copies']})",
            str(f["shared_with_other_folders"]),
        ]
        for f in result["folders"]
    ]
    return header, rows


def _leakage_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    leak = result["test_images_leaked"]
    rows = []
    for f in [*leak["folders"], {**leak, "folder": "all test-like folders"}]:
        cells = [
            _share(f["per_class"][c]["leaked"], f["per_class"][c]["images"]) if c in f["per_class"] else "–"
            for c in CLASSES
        ]
        rows.append([f["folder"], *cells, _share(f["leaked"], f["images"])])
    return ["test folder", *map(_short, CLASSES), "all classes"], rows


def report_sections(result: dict[str, Any], figures: Mapping[str, Path | None]) -> list[dict[str, Any]]:
    """The sections of audit.md / audit.html (see :func:`brainmri.render.document.render_report`)."""
    leak, settings = result["test_images_leaked"], result["settings"]
    sections: list[dict[str, Any]] = [
        {"heading": "Summary", "bullets": _summary_bullets(result)},
        {
            "heading": "Folders",
            "text": [
                "Readable images per class; duplicate groups and copies within each folder (all but one image "
                "of each group in the folder; exact: the same pixels after grayscale conversion and resizing); "
                "images whose group also has members in another folder."
            ],
            "table": _folder_table(result),
        },
    ]
    if leak["folders"]:
        copies_in = "; ".join(
            f"{f['folder']}: " + ", ".join(f"{n} in {t}" for t, n in f["copies_in"].items()) for f in leak["folders"]
        )
        sections.append(
            {
                "heading": "Leakage: test images with a copy in a training folder",
                "text": [
                    "A test image counts as leaked when its duplicate group (exact or near) has a member in any "
                    "training-like folder (Training/, train/) of the audited datasets, whatever that member's "
                    f"label. Where the copies are: {copies_in or 'nowhere'}."
                ],
                "table": _leakage_table(result),
                "figures": [("Leakage per class", figures["leakage"])] if figures.get("leakage") else [],
            }
        )
    sections += _group_sections(result, figures)
    unreadable = result["unreadable"]
    sections.append(
        {
            "heading": f"Unreadable files ({len(unreadable)})",
            "text": _more(unreadable) if unreadable else ["Every file could be decoded."],
            "table": (
                ["dataset", "file", "reason"],
                [[u["dataset"], u["path"], u["reason"]] for u in unreadable[:TABLE_ROWS]],
            )
            if unreadable
            else None,
        }
    )
    sections.append(
        {
            "heading": "Settings",
            "bullets": [
                "Sources: " + "; ".join(f"{d['name']} = {d['path']}" for d in result["datasets"]),
                f"Images decoded and resized to {settings['size']} x {settings['size']} grayscale exactly as "
                "'brainmri data prepare' does; exact duplicates by pixel hash (BLAKE2), near duplicates by "
                f"64-bit perceptual hash (imagehash.phash) within Hamming distance {settings['phash_threshold']}, "
                "joined into connected components",
                f"Took {result['seconds']} s on {result['environment']['machine']}, "
                f"{result['environment']['cpus']} CPU cores (brainmri {result['environment']['brainmri']})",
            ],
        }
    )
    return sections


def _group_sections(result: dict[str, Any], figures: Mapping[str, Path | None]) -> list[dict[str, Any]]:
    cross, across, conflicts = result["cross_folder_groups"], result["cross_dataset_groups"], result["label_conflicts"]
    return [
        {
            "heading": f"Duplicate groups across split folders ({len(cross)})",
            "text": [
                "Groups with members in two or more split folders of one dataset (e.g. Training/ and Testing/). "
                + (" ".join(_more(cross)) if cross else "None.")
            ],
            "table": _groups_table(result, cross) if cross else None,
            "figures": [("Example duplicate pairs in different folders", figures["pairs"])]
            if figures.get("pairs")
            else [],
        },
        {
            "heading": f"Duplicate groups across datasets ({len(across)})",
            "text": [
                "Groups with members in two or more of the audited datasets. " + (" ".join(_more(across)) or "")
                if across
                else "None."
            ],
            "table": _groups_table(result, across) if across else None,
        },
        {
            "heading": f"Label conflicts ({len(conflicts)})",
            "text": [
                "Duplicate groups whose members carry different labels; prepare excludes such groups. "
                + (" ".join(_more(conflicts)) or "")
                if conflicts
                else "None."
            ],
            "table": _groups_table(result, conflicts) if conflicts else None,
        },
    ]


def format_summary(result: dict[str, Any]) -> str:
    """The table that ``brainmri data audit`` prints: one row per folder, then the totals."""
    leaked = {f["folder"]: f for f in result["test_images_leaked"]["folders"]}
    header = ["folder", "role", "images", "unreadable", "dup. groups", "copies", "in shared groups", "test leaked"]
    rows = [
        [
            f["folder"],
            f["role"],
            str(f["files"]),
            str(f["unreadable"]),
            str(f["duplicate_groups"]),
            str(f["duplicate_images"]),
            str(f["shared_with_other_folders"]),
            _share(leaked[f["folder"]]["leaked"], leaked[f["folder"]]["images"]) if f["folder"] in leaked else "",
        ]
        for f in result["folders"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    return "\n".join([*lines, *(f"- {b}" for b in _summary_bullets(result))])
