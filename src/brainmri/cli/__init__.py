"""The ``brainmri`` command: argparse over the Python API, one module per command group."""

from brainmri.cli.command import main

__all__ = ["main"]
