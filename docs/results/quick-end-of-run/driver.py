"""Run ``brainmri`` with wall-clock timers around the pieces of the quick preset: each listed
function's seconds and calls, summed, written as JSON when the process ends.

    python driver.py PIECES.json reproduce --preset quick ...
"""

import atexit
import functools
import importlib
import json
import sys
import time
from collections import defaultdict

SECONDS: defaultdict[str, float] = defaultdict(float)
CALLS: defaultdict[str, int] = defaultdict(int)
TARGETS = [
    ("brainmri.training.run", "_save_last"),
    ("brainmri.training.run", "_fit_kept_model"),
    ("brainmri.training.run", "train"),
    ("brainmri.training.run", "_end_epoch"),
    ("brainmri.training.run", "_calibrate"),
    ("brainmri.models.checkpoint", "save_checkpoint"),
    ("brainmri.models.checkpoint", "write_checkpoint"),
    ("brainmri.training.loop", "validate"),
    ("brainmri.training.loop", "train_one_epoch"),
    ("brainmri.evaluation.evaluate", "evaluate_run"),
    ("brainmri.evaluation.evaluate", "_folder"),
    ("brainmri.evaluation.evaluate", "check_images"),
    ("brainmri.evaluation.evaluate", "predict_proba"),
    ("brainmri.evaluation.gallery", "failure_gallery"),
    ("brainmri.evaluation.gallery", "draw_grid"),
    ("brainmri.evaluation.gallery", "_heatmaps"),
    ("brainmri.render.figures", "make_figures"),
    ("brainmri.render.figures", "_save"),
    ("brainmri.experiments.compare", "write_external_groups"),
    ("brainmri.reports.comparison", "write_comparison_report"),
    ("brainmri.data.prepare", "prepare"),
    ("brainmri.metrics.classification", "compute_metrics"),
    ("brainmri.metrics.calibration", "calibration_scores"),
]


def wrap(module_name: str, attr: str) -> None:
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    key = f"{module_name}.{attr}"

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[key] += time.perf_counter() - start
            CALLS[key] += 1

    setattr(module, attr, timed)


def rebind() -> None:
    """Modules that imported a timed function by name before it was wrapped get the wrapper."""
    for module in list(sys.modules.values()):
        if module is None or not getattr(module, "__name__", "").startswith("brainmri"):
            continue
        for source_name, attr in TARGETS:
            source = sys.modules[source_name]
            current = getattr(module, attr, None)
            if (
                module is not source
                and callable(current)
                and not hasattr(current, "__wrapped__")
                and getattr(current, "__module__", None) == source_name
            ):
                setattr(module, attr, getattr(source, attr))


def report(path: str, t0: float) -> None:
    SECONDS["total"] = time.perf_counter() - t0
    out = {k: [round(SECONDS[k], 2), CALLS[k]] for k in sorted(SECONDS, key=lambda k: -SECONDS[k])}
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    t0 = time.perf_counter()
    for name, attr in TARGETS:
        wrap(name, attr)
    rebind()
    atexit.register(report, sys.argv[1], t0)
    from brainmri.cli.command import main

    sys.exit(main(sys.argv[2:]))
