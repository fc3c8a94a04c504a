"""Classify slices with a trained model: PyTorch checkpoints or ONNX exports, one code path.

Decoding and resizing are :func:`brainmri.io.preprocess.to_array`, exactly as in training, and
probabilities come from the one inference path (:mod:`brainmri.inference.forward`) for both backends,
with the flip averaging the model card asks for; it also computes the input check's score in
the same forward pass (:mod:`brainmri.inference.input_check`), so the two backends differ only by float
rounding.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmri.errors import BrainMRIError
from brainmri.files import one_line, shown
from brainmri.inference.input_check import InputCheck, source_reasons
from brainmri.io.images import frame_note, read_image
from brainmri.io.paths import expand_paths
from brainmri.io.preprocess import stack, to_array, to_input

BACKENDS = ("torch", "onnx")
DEFAULT_BATCH_SIZE = 32


@dataclass
class Prediction:
    """One row of a prediction table; ``error`` is set (and the rest None) when the file failed.

    ``input_warning`` says that the image is not like the training images (too small,
    near-constant, out of distribution: :mod:`brainmri.inference.input_check`); the prediction is kept.
    ``frame`` of ``frames`` is the frame classified in a multi-frame file (a DICOM series in one
    file, a GIF, a multi-page TIFF; ``frames`` 0: uncountable); both None for a single image.
    """

    name: str
    label: str | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None
    input_warning: str | None = None
    frame: int | None = None
    frames: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def frame_note(self) -> str | None:
        """``frame 3 of 7`` when one frame of several was classified."""
        return None if self.frame is None else frame_note(self.frame, self.frames or 0)


def is_onnx_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


class Predictor:
    """A model and its card, loaded once; ``predict_arrays`` and ``explain`` are thread-safe.

    ``model_path`` is a checkpoint, a run folder (uses ``checkpoints/best.pt``), a folder export
    (``brainmri export --format folder``: safetensors, nothing unpickled) or an ``.onnx`` export.
    ``backend="onnx"`` with a checkpoint exports it to ONNX in memory first (seconds); an
    ``.onnx`` file always runs on ONNX Runtime. Grad-CAM needs the PyTorch weights, so
    :meth:`explain` is unavailable for a bare ``.onnx`` file.
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", backend: str = "torch", threads: int | None = None):
        if backend not in BACKENDS:
            raise BrainMRIError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        from brainmri.runtime import check_threads, resolve_device

        if threads is not None:
            check_threads(threads)

        self.model_path: Path | None = Path(model_path)
        self.device = resolve_device(device)
        self.model: torch.nn.Module | None = None
        self.session = None
        if is_onnx_file(model_path):
            from brainmri.inference.export import load_onnx

            backend = "onnx"
            model_proto, self.card = load_onnx(model_path)
            self.input_check = InputCheck.for_onnx(model_proto, self.card)
        else:
            from brainmri.models.checkpoint import model_from_checkpoint, read_checkpoint

            ckpt = read_checkpoint(model_path)
            try:
                self.model, self.card = model_from_checkpoint(ckpt, model_path, device=self.device)
            except (RuntimeError, AssertionError) as exc:  # e.g. device "cuda" without a GPU
                raise BrainMRIError(
                    f"cannot load {model_path} on device {device!r}: {str(exc).splitlines()[0]}"
                ) from None
            self.model.requires_grad_(False)
            self.input_check = InputCheck.from_checkpoint(ckpt)
            if backend == "onnx":
                from brainmri.inference.export import to_onnx

                scorer = self.input_check.extra if isinstance(self.input_check.extra, torch.nn.Module) else None
                model_proto = to_onnx(self.model, self.card, scorer=scorer)
                self.input_check = InputCheck.for_onnx(model_proto, self.card)
        self.backend = backend
        if backend == "onnx":
            from brainmri.inference.export import make_session

            self.session = make_session(model_proto, threads=threads)
        elif threads:
            torch.set_num_threads(threads)
        self._read_card()

    @classmethod
    def from_model(cls, model: torch.nn.Module, card: Mapping[str, Any], device: str = "cpu") -> Predictor:
        """A predictor around a model already in memory (a notebook, a test): nothing is read
        from disk. ``model`` is a :func:`brainmri.models.build.build_model` network, whose
        preprocessing (:class:`~brainmri.models.build.InputAdapter`) lives inside it; ``card``
        its model card (:func:`brainmri.models.card.make_card`), which gives the classes, image
        size, prepared size, flip averaging and temperature as a checkpoint's card does.

        The model is used in place (put in eval mode on ``device``). The input check runs its
        model-independent checks only (size, near-constant, colour): its fitted statistics live
        in a checkpoint (``brainmri calibrate RUN``), which :class:`Predictor` reads."""
        from brainmri.models.card import check_card
        from brainmri.runtime import resolve_device

        self = cls.__new__(cls)
        self.model_path = None
        self.card = check_card(card, "the card given to Predictor.from_model")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.session = None
        self.backend = "torch"
        self.input_check = InputCheck.cheap_only("a model in memory: no fitted statistics")
        self._read_card()
        return self

    def _read_card(self) -> None:
        """What the card says about using the model, read once."""
        self.classes: list[str] = list(self.card["classes"])
        self.flip = bool(self.card.get("tta"))  # averaged with the mirror image, as validated
        # Temperature scaling fitted on the run's validation side (1: none; brainmri.metrics.calibration).
        self.temperature = float(self.card.get("temperature") or 1.0)
        self.image_size: int = int(self.card["image_size"])
        self.prepared_size: int | None = self.card.get("prepared_size")
        self._cam_lock = threading.Lock()
        self._cam_model: torch.nn.Module | None = None
        from brainmri.inference.explain import DEFAULT_EXPLAINER, Explainer

        # How maps are made: the method the card names (chosen by 'evaluate --boxes' on the
        # boxes' select half), else the default; a caller may set another.
        chosen = (self.card.get("explanation") or {}).get("chosen")
        self.explainer: Explainer = Explainer.parse(chosen) if isinstance(chosen, str) else DEFAULT_EXPLAINER

    def to_array(self, source: str | Path | bytes | np.ndarray) -> np.ndarray:
        """One slice decoded and resized exactly as this model's training images were."""
        return to_array(source, self.image_size, via=self.prepared_size)

    def load(self, source: str | Path | bytes | np.ndarray) -> tuple[np.ndarray, list[str]]:
        """:meth:`to_array` and the input check's reasons about the source image (before resizing)."""
        array, reasons, _ = self.load_frame(source)
        return array, reasons

    def load_frame(
        self, source: str | Path | bytes | np.ndarray
    ) -> tuple[np.ndarray, list[str], tuple[int, int] | None]:
        """:meth:`load`, and (frame used, frames) of a multi-frame file, None for a single image,
        so that what was classified is said wherever the prediction is shown."""
        if isinstance(source, np.ndarray):
            return self.to_array(source), source_reasons(source), None
        decoded = read_image(source)
        frame = (decoded.frame, decoded.frames) if decoded.frame_note else None
        return self.to_array(decoded.array), source_reasons(decoded.array, decoded.chroma), frame

    def predict_arrays(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 (H, W) arrays at ``image_size`` -> probabilities (N, C), float64."""
        return self.predict_checked(arrays)[0]

    def predict_checked(
        self, arrays: Sequence[np.ndarray], reasons: Sequence[list[str]] | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Probabilities and each slice's input warning (None: like the training images), from
        one forward pass; ``reasons`` are those of :meth:`load` about the source images."""
        if len(arrays) == 0:
            return np.zeros((0, len(self.classes))), []
        for arr in arrays:
            if arr.shape != (self.image_size, self.image_size) or arr.dtype != np.uint8:
                raise BrainMRIError(
                    f"expected uint8 arrays of shape {(self.image_size, self.image_size)}, got {arr.dtype} {arr.shape}"
                )
        reasons = list(reasons) if reasons is not None else [[] for _ in arrays]
        model = self.session if self.session is not None else self.model
        proba, warnings, _ = self.input_check.classify(
            model,
            stack(arrays),
            reasons,
            batch_size=len(arrays),
            flip=self.flip,
            device=self.device,
            temperature=self.temperature,
        )
        return proba, warnings

    def predict_sources(
        self, sources: Sequence[str | Path | bytes], names: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Decode and classify; a source that cannot be decoded gets its own error row."""
        if names is None:
            names = [str(s) if isinstance(s, (str, Path)) else f"<bytes {i}>" for i, s in enumerate(sources)]
        rows, arrays, reasons = self._decode(sources, names)
        return self._fill(rows, arrays, reasons)

    def _decode(
        self, sources: Sequence[str | Path | bytes], names: Sequence[str]
    ) -> tuple[list[Prediction], list[np.ndarray | None], list[list[str]]]:
        rows: list[Prediction] = []
        arrays: list[np.ndarray | None] = []
        reasons: list[list[str]] = []
        for src, name in zip(sources, names, strict=True):
            try:
                array, why, frame = self.load_frame(src)
            except BrainMRIError as exc:  # ImageError: the reason is the message
                array, why = None, []
                rows.append(Prediction(name, error=str(exc)))
            else:
                rows.append(Prediction(name, frame=frame[0], frames=frame[1]) if frame else Prediction(name))
            arrays.append(array)
            reasons.append(why)
        return rows, arrays, reasons

    def _fill(
        self, rows: list[Prediction], arrays: list[np.ndarray | None], reasons: list[list[str]]
    ) -> list[Prediction]:
        good = [i for i, a in enumerate(arrays) if a is not None]
        probs, warnings = self.predict_checked([a for a in arrays if a is not None], [reasons[i] for i in good])
        for i, p, warning in zip(good, probs, warnings, strict=True):
            rows[i].probabilities = {c: float(v) for c, v in zip(self.classes, p, strict=True)}
            rows[i].label = self.classes[int(np.argmax(p))]
            rows[i].input_warning = warning
        return rows

    def class_index(self, target_class: str | int | None, array: np.ndarray) -> int:
        """Resolve ``target_class`` (name, index or None = the predicted class)."""
        if target_class is None:
            return int(np.argmax(self.predict_arrays([array])[0]))
        if isinstance(target_class, (int, np.integer)):
            if not 0 <= int(target_class) < len(self.classes):
                raise BrainMRIError(f"class index {target_class} out of range 0..{len(self.classes) - 1}")
            return int(target_class)
        if target_class not in self.classes:
            raise BrainMRIError(f"unknown target class {target_class!r}; classes: {', '.join(self.classes)}")
        return self.classes.index(target_class)

    def explain(self, array: np.ndarray, target_class: str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The map of one uint8 (H, W) slice (:attr:`explainer`): (heatmap float (H, W) in
        [0, 1], overlay uint8 (H, W, 3))."""
        from brainmri.inference.explain import overlay, saliency

        if self.model is None:
            raise BrainMRIError(
                "Grad-CAM needs the PyTorch checkpoint; explanations are not available for an .onnx file"
            )
        index = self.class_index(target_class, array)
        x = to_input(stack([array]))
        # Grad-CAM hooks are not re-entrant; a private copy of the model keeps them away from
        # concurrent predict_arrays calls on self.model.
        with self._cam_lock:
            if self._cam_model is None:
                self._cam_model = copy.deepcopy(self.model).eval()
            heat = saliency(self._cam_model, x.to(self.device), [index], self.explainer)[0]
        return heat, overlay(array, heat)

    def explain_panel(self, array: np.ndarray, target_class: str | int | None = None, title: str | None = None) -> Any:
        """The slice and its Grad-CAM overlay side by side, titled with class and probability."""
        from brainmri.inference.explain import panel

        probs = self.predict_arrays([array])[0]
        index = self.class_index(target_class, array)
        heat, over = self.explain(array, index)
        predicted = self.classes[int(np.argmax(probs))]
        caption = f"predicted {predicted} (p={probs.max():.3f})"
        method = self.explainer.name
        if self.classes[index] != predicted:
            caption += f"; {method} for {self.classes[index]} (p={probs[index]:.3f})"
        else:
            caption += f"; {method} for the predicted class"
        return panel(array, over, caption if title is None else f"{title}\n{caption}", method=method)


def iter_predictions(
    predictor: Predictor, paths: Sequence[Path], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[tuple[Prediction, np.ndarray | None]]:
    """Predict in batches (bounded memory for large folders); yields (row, decoded array)."""
    if batch_size < 1:
        raise BrainMRIError("batch size must be at least 1")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        rows, arrays, reasons = predictor._decode(chunk, [str(p) for p in chunk])
        yield from zip(predictor._fill(rows, arrays, reasons), arrays, strict=True)


def predict_paths(
    predictor: Predictor, paths: Iterable[str | Path], batch_size: int = DEFAULT_BATCH_SIZE
) -> list[Prediction]:
    """Expand ``paths`` (files, folders, globs) and classify every image found."""
    return [row for row, _ in iter_predictions(predictor, expand_paths(paths), batch_size)]


def format_table(rows: Sequence[Prediction], classes: Sequence[str]) -> str:
    """A plain-text table: file, predicted class, one probability column per class, the frame
    classified (shown when any file has several), error or input warning (the last column,
    shown when any row has one)."""
    header = ["file", "predicted", *classes]
    framed = any(r.frame_note for r in rows)
    if framed:
        header.append("frame")
    used = (("error", any(not r.ok for r in rows)), ("warning", any(r.input_warning for r in rows)))
    last = [name for name, on in used if on]
    if last:
        header.append(" / ".join(last))
    lines = [header]
    for r in rows:  # names and messages quoted when unprintable: a newline must not split a row
        frame = [r.frame_note or "-"] if framed else []
        if r.ok:
            probs = [f"{(r.probabilities or {})[c]:.4f}" for c in classes]
            warning = [f"WARNING: {r.input_warning}"] if r.input_warning else []
            lines.append([shown(r.name), r.label or "", *probs, *frame, *warning])
        else:
            lines.append([shown(r.name), "ERROR", *("-" for _ in classes), *frame, one_line(r.error or "")])
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def write_predictions(
    path: str | Path, rows: Sequence[Prediction], classes: Sequence[str], card: Mapping[str, Any]
) -> Path:
    """Write ``.csv`` (one column per class, empty for failed rows) or ``.json`` (with the model name)."""
    from brainmri.files import atomic_write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "predicted", *classes, "error", "input_warning", "frame", "frames"])
        for r in rows:
            probs = [f"{(r.probabilities or {})[c]:.6f}" for c in classes] if r.ok else ["" for _ in classes]
            frame = [r.frame, r.frames] if r.frame is not None else ["", ""]
            writer.writerow([r.name, r.label or "", *probs, r.error or "", r.input_warning or "", *frame])
        atomic_write_text(path, buf.getvalue())
    elif suffix == ".json":
        doc = {
            "model": card.get("name", ""),
            "arch": card.get("arch", ""),
            "classes": list(classes),
            "notice": card.get("notice", ""),
            "predictions": [asdict(r) for r in rows],
        }
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    else:
        raise BrainMRIError(f"--output must end in .csv or .json, not {path.name!r}")
    return path
