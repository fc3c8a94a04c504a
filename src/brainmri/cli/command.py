"""The ``brainmri`` command: a thin argparse layer over the Python API.

Every user error surfaces as :class:`brainmri.errors.BrainMRIError`, printed here as one
line on stderr with a non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from brainmri import __version__
from brainmri.cli import data as cli_data
from brainmri.cli import experiments as cli_experiments
from brainmri.cli import predict as cli_predict
from brainmri.cli import results as cli_results
from brainmri.cli import serve as cli_serve
from brainmri.cli.args import EXIT_INTERRUPTED, EXIT_USER_ERROR
from brainmri.errors import BrainMRIError
from brainmri.files import brief, one_line
from brainmri.terminal import SafeStream

#: Longest error line printed: a message that quotes a value from a file is cut here at the latest.
MAX_ERROR_CHARS = 2000


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, like every other user error (subcommands inherit this)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("brainmri").strip()
        prefix = f"{where}: " if where else ""
        self.exit(EXIT_USER_ERROR, f"brainmri: error: {prefix}{message} (see '{self.prog} -h')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="brainmri",
        description="Train, evaluate and deploy ResNet classifiers for brain tumours on MRI slices. "
        "Research software, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainmri {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        cli_data.add_data_parser,
        cli_experiments.add_train_parser,
        cli_experiments.add_evaluate_parsers,
        cli_predict.add_predict_parsers,
        cli_serve.add_bench_parser,
        cli_serve.add_serve_parser,
        cli_experiments.add_calibrate_parser,
        cli_results.add_results_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, see _Parser), --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USER_ERROR
    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)  # card text, file and class names: never raw escape codes
    try:
        return _run(args)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    """The command, with every user error as one line on stderr."""
    try:
        return int(args.func(args) or 0)
    except BrainMRIError as exc:  # one short line, whatever file names or values the message carries
        print(f"brainmri: error: {brief(one_line(str(exc)), MAX_ERROR_CHARS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `brainmri info RUN | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the environment (permissions, a full disk), not a bug: one line too
        where = f": {exc.filename}" if exc.filename else ""
        print(f"brainmri: error: {one_line(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("brainmri: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
