"""The run folder: every file a training run and its evaluations write, named once.

::

    RUN/
      config.json        the effective TrainConfig (absolute paths)
      split.csv          the split this run used (train / val / test)
      environment.json   versions, hardware, precision; one entry per resumed session
      train.log          one line per event
      history.csv        one row per epoch
      summary.json       written last: the run finished
      checkpoints/last.pt  everything resuming needs
      checkpoints/best.pt  the model that is kept, with its card (written by training only)
      checkpoints/best.card.json  card fields recorded after training (evaluation, calibration)
      metrics.json, predictions.csv, figures/   evaluation on the held-out (test) side
      val_predictions.csv  probabilities on the validation side (fits calibration)
      eval/NAME/          evaluation on another folder
      tensorboard/        with --tensorboard
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_JSON = "config.json"
SPLIT_CSV = "split.csv"
ENVIRONMENT_JSON = "environment.json"
TRAIN_LOG = "train.log"
HISTORY_CSV = "history.csv"
SUMMARY_JSON = "summary.json"
CHECKPOINTS = "checkpoints"
LAST_PT = "last.pt"
BEST_PT = "best.pt"
METRICS_JSON = "metrics.json"  # also in every evaluation folder, eval/NAME/
PREDICTIONS_CSV = "predictions.csv"  # likewise
#: Probabilities on the validation side carved from training: what calibration is fitted on.
VAL_PREDICTIONS_CSV = "val_predictions.csv"
FIGURES = "figures"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def config(self) -> Path:
        return self.path / CONFIG_JSON

    @property
    def split(self) -> Path:
        return self.path / SPLIT_CSV

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT_JSON

    @property
    def log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def history(self) -> Path:
        return self.path / HISTORY_CSV

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_JSON

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST_PT

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_PT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_JSON

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_CSV

    @property
    def val_predictions(self) -> Path:
        return self.path / VAL_PREDICTIONS_CSV

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def eval_dir(self, name: str) -> Path:
        return self.path / "eval" / name

    def evaluations(self) -> list[Path]:
        """The finished evaluations on other folders (those with their metrics), by name."""
        return sorted(m.parent for m in (self.path / "eval").glob(f"*/{METRICS_JSON}"))

    def is_run(self) -> bool:
        """A folder that a run wrote (it has its config), and so may be replaced by one."""
        return self.config.is_file()

    def can_resume(self) -> bool:
        return self.last.is_file() and self.config.is_file()

    def finished(self) -> bool:
        return self.summary.is_file()
