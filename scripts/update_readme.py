"""Regenerate every result table of README.md from the committed records.

Each table sits between ``<!-- table NAME DIR -->`` and ``<!-- /table -->``; this rewrites what is
between them with ``brainmri results table DIR --name NAME``. tests/test_results.py checks that
the README equals what this writes.

    python scripts/update_readme.py [README.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from brainmri.experiments.tables import table

#: A block's body may be empty (a new block) but never holds another block's start.
BLOCK = re.compile(r"(<!-- table (\w+) (\S+) -->\n)((?:(?!<!-- table ).)*?)(<!-- /table -->)", re.S)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    root = path.resolve().parent
    text = path.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: m.group(1) + table(root / m.group(3), m.group(2)).strip() + "\n" + m.group(5), text)
    path.write_text(new, encoding="utf-8")
    print(f"{len(BLOCK.findall(text))} tables written into {path}")


if __name__ == "__main__":
    main()
