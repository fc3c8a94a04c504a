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
      checkpoints/best.pt  the model that is kept, with its card
      metrics.json, predictions.csv, figures/   evaluation on the held-out side
      eval/NAME/          evaluation on another folder
      tensorboard/        with --tensorboard
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        return self.path / "config.json"

    @property
    def split(self) -> Path:
        return self.path / "split.csv"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def eval_dir(self, name: str) -> Path:
        return self.path / "eval" / name

    def is_run(self) -> bool:
        """A folder that a run wrote (it has its config), and so may be replaced by one."""
        return self.config.is_file()

    def can_resume(self) -> bool:
        return self.last.is_file() and self.config.is_file()

    def finished(self) -> bool:
        return self.summary.is_file()
