"""The table of README.md: per run, the wall clock (time.txt), the pieces driver.py timed
(pieces.json: seconds summed over calls) and the test accuracies (reproduce.log).

    python summarise.py docs/results/quick-end-of-run
"""

import json
import re
import sys
from pathlib import Path

PIECES = {
    "train_one_epoch": "epochs",
    "validate": "validation",
    "write_checkpoint": "checkpoint writes",
    "_fit_kept_model": "end of training",
    "evaluate_run": "evaluation",
    "failure_gallery": "galleries",
    "draw_grid": "of which grids",
    "prepare": "prepare",
}


def wall_seconds(text: str) -> float:
    minutes, seconds = re.search(r"Elapsed.*: (\d+):(\S+)", text).groups()
    return int(minutes) * 60 + float(seconds)


def main(root: Path) -> None:
    print("| run | end to end s | outside the epochs s | " + " | ".join(PIECES.values()) + " | test accuracy |")
    print("|---|---:|---:|" + "---:|" * len(PIECES) + "---|")
    for run in sorted(p for p in root.iterdir() if (p / "pieces.json").is_file()):
        pieces = {k.rsplit(".", 1)[-1]: v[0] for k, v in json.loads((run / "pieces.json").read_text()).items()}
        wall = wall_seconds((run / "time.txt").read_text())
        accuracies = re.findall(r"(resnet\d+): accuracy (\S+)", (run / "reproduce.log").read_text())
        cells = [f"{pieces.get(k, 0.0):.1f}" for k in PIECES]
        outside = wall - pieces["train_one_epoch"]
        print(f"| {run.name} | {wall:.1f} | {outside:.1f} | " + " | ".join(cells) + " | "
              + " / ".join(v for _, v in accuracies) + " |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
