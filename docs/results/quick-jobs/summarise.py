"""The table of quick-jobs/README.md from the trimmed run folders beside this script: end to end
(time.txt), each depth's training time, test and external accuracy, and the threads it ran with.

    python docs/results/quick-jobs/summarise.py docs/results/quick-jobs
"""

import json
import re
import sys
from pathlib import Path

ARCHS = ("resnet50", "resnet101", "resnet152")


def seconds(time_txt: Path) -> float:
    """Elapsed wall-clock seconds from ``/usr/bin/time -v``."""
    text = re.search(r"Elapsed \(wall clock\) time.*: (.+)", time_txt.read_text()).group(1).strip()
    parts = [float(p) for p in text.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def row(run: Path) -> str:
    runs = run / "runs"
    train, test, ext, threads = [], [], [], set()
    for arch in ARCHS:
        summary = json.loads((runs / arch / "summary.json").read_text())
        train.append(f"{summary['total_seconds']:.0f}")
        test.append(f"{json.loads((runs / arch / 'metrics.json').read_text())['accuracy']:.3f}")
        ext_metrics = runs / arch / "eval" / "brain-tumor-mri-external" / "metrics.json"
        ext.append(f"{json.loads(ext_metrics.read_text())['accuracy']:.3f}")
        threads.add(json.loads((runs / arch / "environment.json").read_text())["torch_threads"])
    return (
        f"| {run.name} | {seconds(run / 'time.txt'):.0f} | {' / '.join(train)} | {' / '.join(test)} | "
        f"{' / '.join(ext)} | {', '.join(str(t) for t in sorted(threads))} |"
    )


folder = Path(sys.argv[1])
print("| run | end to end s | training s (50 / 101 / 152) | test accuracy | external accuracy | threads a run |")
print("|---|---:|---|---|---|---|")
for run in sorted(p for p in folder.iterdir() if (p / "time.txt").is_file()):
    print(row(run))
