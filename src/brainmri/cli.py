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
