"""brainmri: train, evaluate and deploy ResNet classifiers for brain tumours on MRI slices.

The front door: one import gives the whole workflow, from a folder of class folders to a
prediction::

    import brainmri

    brainmri.prepare("raw/", "prepared/")
    run = brainmri.train(brainmri.TrainConfig(data="prepared/"), "runs/r50")
    brainmri.evaluate(run)
    brainmri.Predictor(run).predict_sources(["slice.dcm"])

``import brainmri`` stays cheap (no torch, no matplotlib): each name below is imported from
its subpackage on first use. The subpackages (``brainmri.data``, ``brainmri.training``,
``brainmri.evaluation``, ``brainmri.inference`` ...) hold the rest of the API; the
``brainmri`` command is a thin layer over them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brainmri.errors import BrainMRIError
from brainmri.labels import CLASSES

__version__ = "0.1.0"

#: Public name -> "module:attribute", imported on first use.
_LAZY = {
    "audit": "brainmri.data.audit_report:audit",
    "prepare": "brainmri.data.prepare:prepare",
    "split": "brainmri.data.splits:split",
    "TrainConfig": "brainmri.config:TrainConfig",
    "train": "brainmri.training.run:train",
    "evaluate": "brainmri.evaluation.evaluate:evaluate_run",
    "compare": "brainmri.experiments.compare:compare",
    "reproduce": "brainmri.experiments.reproduce:reproduce",
    "Predictor": "brainmri.inference.predictor:Predictor",
    "Prediction": "brainmri.inference.predictor:Prediction",
    "load_model": "brainmri.models.checkpoint:load_model",
    "build_model": "brainmri.models.build:build_model",
    "make_card": "brainmri.models.card:make_card",
}

__all__ = [
    "BrainMRIError",
    "CLASSES",
    "Prediction",
    "Predictor",
    "TrainConfig",
    "__version__",
    "audit",
    "build_model",
    "compare",
    "evaluate",
    "load_model",
    "make_card",
    "prepare",
    "reproduce",
    "split",
    "train",
]

if TYPE_CHECKING:  # what a type checker and an editor see; at run time, __getattr__ below
    from brainmri.config import TrainConfig
    from brainmri.data.audit_report import audit
    from brainmri.data.prepare import prepare
    from brainmri.data.splits import split
    from brainmri.evaluation.evaluate import evaluate_run as evaluate
    from brainmri.experiments.compare import compare
    from brainmri.experiments.reproduce import reproduce
    from brainmri.inference.predictor import Prediction, Predictor
    from brainmri.models.build import build_model
    from brainmri.models.card import make_card
    from brainmri.models.checkpoint import load_model
    from brainmri.training.run import train


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name].split(":")
    except KeyError:
        raise AttributeError(f"module 'brainmri' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
