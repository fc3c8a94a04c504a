"""The ``brainmri`` command: a thin argparse layer over the Python API.

Every user error surfaces as :class:`brainmri.errors.BrainMRIError`, printed here as one
line on stderr with a non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from brainmri import __version__
from brainmri.errors import BrainMRIError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# --- data (issue: data) --------------------------------------------------------------


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch, prepare and split the dataset")
    p.set_defaults(func=lambda a: p.print_help() or 0)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    f = dsub.add_parser("fetch", help="download the public dataset (Bhuvaji et al.) into the cache")
    f.add_argument("--dest", help="folder to unpack into (default: $BRAINMRI_HOME/datasets/brain-tumor-mri-sartaj)")
    f.add_argument("--url", help="archive URL (http(s) or file://)")
    f.add_argument("--sha256", help="expected SHA-256 of the archive")
    f.add_argument("--force", action="store_true", help="download again even if a finished copy exists")
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
    pr.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores, at most 8)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing prepared OUT")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=_run_data_prepare)

    sp = dsub.add_parser("split", help="stratified, duplicate-group-aware train/test split or k folds")
    sp.add_argument("prepared", metavar="PREPARED", help="folder made by 'brainmri data prepare'")
    sp.add_argument("--out", help="split file (default: PREPARED/split.csv, or PREPARED/folds_k<K>.csv)")
    sp.add_argument("--test-size", type=float, default=0.2, help="fraction for the test side (default: 0.2)")
    sp.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    sp.add_argument("--k", type=int, default=None, help="make K cross-validation folds instead")
    sp.set_defaults(func=_run_data_split)


def _run_data_fetch(args: argparse.Namespace) -> int:
    from brainmri.fetch import DEFAULT_URL, fetch

    path = fetch(args.dest, url=args.url or DEFAULT_URL, force=args.force, sha256=args.sha256)
    print(path)
    return 0


def _run_data_prepare(args: argparse.Namespace) -> int:
    from brainmri import data

    threshold = data.PHASH_THRESHOLD if args.phash_threshold is None else args.phash_threshold
    summary = data.prepare(
        args.src,
        args.out,
        size=args.size,
        phash_threshold=threshold,
        label_map=args.label_map,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(data.format_summary(summary))
    print(f"wrote {args.out} in {summary['seconds']:.1f} s")
    return 0


def _run_data_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmri import data

    path = data.split(args.prepared, args.out, test_size=args.test_size, seed=args.seed, k=args.k)
    rows = data.read_split(path)
    if args.k:
        counts = ", ".join(f"fold {i}: {sum(r['fold'] == str(i) for r in rows)}" for i in range(args.k))
    else:
        counts = f"train {sum(r['side'] == 'train' for r in rows)}, test {sum(r['side'] == 'test' for r in rows)}"
    print(f"wrote {Path(path)} ({counts})")
    return 0


# --- train -------------------------------------------------------------------------


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    pass


# --- evaluate, compare, reproduce ----------------------------------------------------


def add_evaluate_parsers(sub: argparse._SubParsersAction) -> None:
    pass


# --- predict, export, info -----------------------------------------------------------


def add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    pass


# --- bench ---------------------------------------------------------------------------


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    pass


# --- serve ---------------------------------------------------------------------------


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    pass


# --- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainmri",
        description="Train, evaluate and deploy ResNet classifiers for brain tumours on MRI slices. "
        "Research software, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainmri {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        add_data_parser,
        add_train_parser,
        add_evaluate_parsers,
        add_predict_parsers,
        add_bench_parser,
        add_serve_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except BrainMRIError as exc:
        print(f"brainmri: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("brainmri: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
