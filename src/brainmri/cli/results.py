"""``brainmri results``: the README's tables from committed records, and publishing a results
folder into the repository; thin layers over :mod:`brainmri.experiments.tables` and
:mod:`brainmri.experiments.publish`."""

from __future__ import annotations

import argparse


def add_results_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="tables from a results folder's records; publish a results folder into docs/results",
        description="Work with finished results: print the Markdown tables the README quotes, recomputed from the "
        "records alone (no model), or copy a results folder's records (no checkpoints) into the repository.",
    )
    rsub = p.add_subparsers(dest="results_command", metavar="ACTION", required=True)
    t = rsub.add_parser("table", help="print the Markdown tables of a results folder")
    t.add_argument("folder", metavar="DIR", help="a comparison, leakage study or localisation folder")
    t.add_argument("--name", help="one table (default: every table the folder has)")
    t.set_defaults(func=_run_table)
    pub = rsub.add_parser("publish", help="copy a results folder's records (no checkpoints) to DEST")
    pub.add_argument("folder", metavar="DIR")
    pub.add_argument("dest", metavar="DEST")
    pub.add_argument("--overwrite", action="store_true", help="replace DEST")
    pub.set_defaults(func=_run_publish)


def _run_table(args: argparse.Namespace) -> int:
    from brainmri.experiments.tables import available, table

    names = [args.name] if args.name else available(args.folder)
    print("\n\n".join(f"<!-- table {n} -->\n{table(args.folder, n)}" for n in names))
    return 0


def _run_publish(args: argparse.Namespace) -> int:
    from brainmri.experiments.publish import publish

    written = publish(args.folder, args.dest, overwrite=args.overwrite)
    print(f"{len(written)} files written to {args.dest}")
    return 0
