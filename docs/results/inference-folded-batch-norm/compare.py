"""Two quick-preset comparisons that differ only in how models are loaded for inference:
per model, the test side's and the external folder's probabilities, the largest difference
between them, the share of slices with the same predicted class, and both accuracies.

    python compare.py quick-nofold-1 quick-fold-1
"""

import json
import sys
from pathlib import Path

from brainmri.metrics.predictions import read_predictions

FILES = {"test": "predictions.csv", "external": "eval/brain-tumor-mri-external/predictions.csv"}


def main(kept: Path, folded: Path) -> dict:
    out = {}
    for run in sorted(p.name for p in (kept / "runs").iterdir()):
        out[run] = {}
        for side, name in FILES.items():
            y, a, paths_a, _ = read_predictions(kept / "runs" / run / name)
            _, b, paths_b, _ = read_predictions(folded / "runs" / run / name)
            assert paths_a == paths_b, "the two runs scored different images"
            out[run][side] = {
                "max_abs_probability_difference": float(abs(a - b).max()),
                "same_predicted_class": float((a.argmax(1) == b.argmax(1)).mean()),
                "accuracy_kept": float((a.argmax(1) == y).mean()),
                "accuracy_folded": float((b.argmax(1) == y).mean()),
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
