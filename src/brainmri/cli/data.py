"""``brainmri data``: fetch, prepare, split and audit dataset folders."""

from __future__ import annotations

import argparse
import sys

from brainmri.cli.args import EXIT_USER_ERROR, add_groups_flags, int_at_least
from brainmri.files import one_line


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch, prepare and split the dataset")
    p.set_defaults(func=lambda a: p.print_help() or EXIT_USER_ERROR)  # an action is required
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    f = dsub.add_parser("fetch", help="download the public dataset (Bhuvaji et al.) into the cache")
    f.add_argument("--dest", help="folder to unpack into (default: $BRAINMRI_HOME/datasets/brain-tumor-mri-sartaj)")
    f.add_argument("--url", help="archive URL (http(s) or file://)")
    f.add_argument("--sha256", help="expected SHA-256 of the archive")
    f.add_argument(
        "--content-sha256",
        help="expected content digest of the unpacked images (default for the default URL: the pinned dataset's)",
    )
    f.add_argument(
        "--force",
        action="store_true",
        help="download again, replacing an earlier download of this tool in --dest (never any other folder)",
    )
    f.set_defaults(func=_run_data_fetch)

    pr = dsub.add_parser("prepare", help="grayscale, resize, remove duplicates; write PNGs and manifest.csv")
    pr.add_argument("src", metavar="SRC", help="folder of class folders, optionally under Training/ Testing/ ...")
    pr.add_argument("out", metavar="OUT", help="output folder (must not exist unless --overwrite)")
    pr.add_argument("--size", type=int, default=256, help="output size in pixels (default: 256, as in the paper)")
    pr.add_argument(
        "--phash-threshold",
        type=int,
        default=None,
        help="perceptual-hash Hamming distance at or under which images are near duplicates "
        "(default: 2; -1: exact duplicates only)",
    )
    pr.add_argument("--label-map", help="extra folder names, e.g. 'tumor_g=glioma_tumor,none=normal'")
    pr.add_argument(
        "--workers", type=int_at_least(1), default=None, help="worker processes (default: all cores, at most 8)"
    )
    pr.add_argument("--overwrite", action="store_true", help="replace an existing prepared OUT")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_groups_flags(pr, "recorded in manifest.csv, so that every later split of OUT keeps each group on one side")
    pr.set_defaults(func=_run_data_prepare)

    sp = dsub.add_parser("split", help="stratified, duplicate-group-aware train/test split or k folds")
    sp.add_argument("prepared", metavar="PREPARED", help="folder made by 'brainmri data prepare'")
    sp.add_argument("--out", help="split file (default: PREPARED/split.csv, or PREPARED/folds_k<K>.csv)")
    sp.add_argument("--test-size", type=float, default=0.2, help="fraction for the test side (default: 0.2)")
    sp.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    sp.add_argument("--k", type=int, default=None, help="make K cross-validation folds instead")
    sp.add_argument(
        "--overwrite", action="store_true", help="replace an existing split file (never manifest.csv or prepare.json)"
    )
    add_groups_flags(sp, "no group (with its duplicates) crosses the split; default: the groups prepare recorded")
    sp.set_defaults(func=_run_data_split)

    au = dsub.add_parser(
        "audit",
        help="find duplicates, label conflicts and train/test leakage in dataset folders (read-only)",
        description="Hash every image of one or more dataset folders as prepare does, group exact and near "
        "duplicates, and report duplicates within each folder, groups that cross split folders or datasets, "
        "label conflicts, how many test images have a copy in a training folder, and unreadable files. "
        "Writes OUT/audit.json, audit.md and a self-contained audit.html; the sources are only read.",
    )
    au.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="dataset folder (class folders, optionally under Training/ Testing/ ...); each SRC is one dataset",
    )
    au.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the audit (must not exist unless --overwrite)"
    )
    au.add_argument("--size", type=int, default=256, help="size at which images are hashed (default: 256, as prepare)")
    au.add_argument(
        "--phash-threshold",
        type=int,
        default=None,
        help="perceptual-hash Hamming distance at or under which images are near duplicates "
        "(default: 2, as prepare; -1: exact duplicates only)",
    )
    au.add_argument("--label-map", help="extra folder names, e.g. 'tumor_g=glioma_tumor,none=normal'")
    au.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores, at most 8)")
    au.add_argument("--overwrite", action="store_true", help="replace an existing audit in DIR")
    au.add_argument("--no-progress", action="store_true", help="no progress bar")
    au.set_defaults(func=_run_data_audit)


def _run_data_fetch(args: argparse.Namespace) -> int:
    from brainmri.data.fetch import DEFAULT_URL, fetch

    path = fetch(
        args.dest, url=args.url or DEFAULT_URL, force=args.force, sha256=args.sha256, content_sha256=args.content_sha256
    )
    print(path)
    return 0


def _run_data_prepare(args: argparse.Namespace) -> int:
    from brainmri.data import prepare as preparation

    threshold = preparation.PHASH_THRESHOLD if args.phash_threshold is None else args.phash_threshold
    summary = preparation.prepare(
        args.src,
        args.out,
        size=args.size,
        phash_threshold=threshold,
        label_map=args.label_map,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        groups=args.groups,
        groups_missing=args.groups_missing,
    )
    print(preparation.format_summary(summary))
    print(f"wrote {args.out} in {summary['seconds']:.1f} s")
    for warning in summary["warnings"]:
        print(f"brainmri: warning: {one_line(warning)}", file=sys.stderr)
    return 0


def _run_data_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmri.data import prepared as data
    from brainmri.data import splitfile, splits

    path = splits.split(
        args.prepared,
        args.out,
        test_size=args.test_size,
        seed=args.seed,
        k=args.k,
        groups=args.groups,
        groups_missing=args.groups_missing,
        overwrite=args.overwrite,
    )
    rows = splitfile.read_split(path)
    if args.k is not None:
        counts = ", ".join(f"fold {i}: {sum(r['fold'] == str(i) for r in rows)}" for i in range(args.k))
    else:
        counts = f"train {sum(r['side'] == 'train' for r in rows)}, test {sum(r['side'] == 'test' for r in rows)}"
    level = "patient" if args.groups or data.has_patient_groups(args.prepared) else "duplicate group"
    print(f"wrote {Path(path)} ({counts}; split level: {level})")
    return 0


def _run_data_audit(args: argparse.Namespace) -> int:
    from brainmri.data import prepare as preparation
    from brainmri.data.audit_report import audit, format_summary

    result = audit(
        args.sources,
        args.out,
        size=args.size,
        phash_threshold=preparation.PHASH_THRESHOLD if args.phash_threshold is None else args.phash_threshold,
        label_map=args.label_map,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(format_summary(result))
    print(f"wrote {args.out}/audit.json, audit.md and audit.html in {result['seconds']:.1f} s")
    return 0
