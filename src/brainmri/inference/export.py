"""ONNX export with the model card embedded, and loading such exports for ONNX Runtime; and
the folder export (:mod:`brainmri.models.folder`: the card as JSON, the weights as safetensors).

The graph takes ``image``: float32 (batch, 1, H, W) in [0, 1] (the same input as the PyTorch
model: channel replication and normalisation are inside it) and returns ``logits`` and
``probabilities`` (softmax of the logits), both (batch, classes); the batch size is dynamic.
The model card is stored as JSON in the ONNX ``metadata_props`` under ``brainmri_card``, so
the file alone says what it is, how to feed it and that it is not a medical device.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from brainmri.errors import BrainMRIError
from brainmri.files import one_line
from brainmri.models.card import ModelCard, check_card
from brainmri.rundir import RunDir

CARD_KEY = "brainmri_card"
OPSET = 18
#: Lowest opset each exporter writes: the torch.export-based one (default) and the TorchScript one.
MIN_OPSET = {"dynamo": 18, "legacy": 9}
FORMATS = ("onnx", "folder")
QUANTIZE = ("int8",)


class _WithProbabilities(nn.Module):
    """Adds the softmax as a second output, for users of the file who want probabilities, and
    with a ``scorer`` the input check's score of the pooled features as a third (``ood_score``)."""

    def __init__(self, model: nn.Module, scorer: nn.Module | None = None):
        super().__init__()
        self.model: Any = model  # with a scorer, a Classifier (``features`` and ``head``)
        self.scorer = scorer

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.scorer is None:
            logits = self.model(image)
            return logits, torch.softmax(logits, dim=1)
        features = self.model.features(image)
        logits = self.model.head(features)
        return logits, torch.softmax(logits, dim=1), self.scorer(features)


def to_onnx(
    model: nn.Module, card: Mapping[str, Any], opset: int = OPSET, dynamo: bool = True, scorer: nn.Module | None = None
) -> Any:
    """Export an eval-mode model to an in-memory ``onnx.ModelProto`` carrying ``card``.

    With ``scorer`` (:class:`brainmri.inference.input_check.MahalanobisScore`) the graph also outputs the
    input check's score, ``ood_score`` (batch,). Uses the torch.export-based exporter; falls
    back to the TorchScript exporter if that fails.
    """
    import onnx

    from brainmri.inference.input_check import ONNX_OUTPUT

    size = int(card["image_size"])
    wrapped = _WithProbabilities(model, scorer).eval()
    example = (torch.rand(2, 1, size, size, device=next(model.parameters()).device),)
    outputs = ["logits", "probabilities"] + ([ONNX_OUTPUT] if scorer is not None else [])
    names: dict[str, Any] = {"input_names": ["image"], "output_names": outputs, "opset_version": opset}
    proto = None
    if dynamo:
        try:
            program = torch.onnx.export(
                wrapped,
                example,
                dynamo=True,
                verbose=False,
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
                **names,
            )
            if program is None:
                raise RuntimeError("the exporter returned no program")
            proto = program.model_proto
        except Exception as exc:  # the new exporter fails on some models; the old one is the fallback
            warnings.warn(
                f"torch.export-based ONNX export failed ({exc}); using the TorchScript exporter", stacklevel=2
            )
    if proto is None:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer warnings of the legacy exporter
            try:
                _legacy_export(wrapped, example, buf, names)
            except Exception as exc:
                raise BrainMRIError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None
        proto = onnx.load_from_string(buf.getvalue())
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if "export" in card:  # record the opset the graph actually has, not only the one asked for
        card = {**card, "export": {**card["export"], "opset": int(written)}}
    set_card(proto, card)
    return proto


def _legacy_export(wrapped: nn.Module, example: tuple, buf: io.BytesIO, names: dict[str, Any]) -> None:
    """The TorchScript exporter (``--legacy``), with a dynamic batch axis."""
    torch.onnx.export(
        wrapped,
        example,
        buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object too
        dynamo=False,
        dynamic_axes={name: {0: "batch"} for name in ["image", *names["output_names"]]},
        **names,
    )


def set_card(proto: Any, card: Mapping[str, Any]) -> None:
    """Store the card (JSON) in the model's metadata, replacing an older one."""
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == CARD_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card, sort_keys=True)
    proto.producer_name = "brainmri"
    proto.doc_string = f"{card.get('name', 'brainmri model')}: {card.get('notice', '')}"


def load_onnx(path: str | Path) -> tuple[Any, ModelCard]:
    """Read an ``.onnx`` file and its card; anything else is a clear error."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BrainMRIError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception:
        raise BrainMRIError(f"{path} is not an ONNX model (cannot be parsed)") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in meta:
        raise BrainMRIError(f"{path} is an ONNX model without a brainmri model card; export it with 'brainmri export'")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError:
        raise BrainMRIError(f"{path}: the embedded model card is not valid JSON") from None
    checked = check_card(card, path)
    _check_graph_matches_card(proto, checked, path)
    return proto, checked


def _check_graph_matches_card(proto: Any, card: Mapping[str, Any], path: Path) -> None:
    """The graph's fixed input size and class count must be the card's, or every prediction
    would fail inside ONNX Runtime or be labelled with the wrong classes."""
    inputs = {i.name: i for i in proto.graph.input}
    outputs = {o.name: o for o in proto.graph.output}
    if "image" not in inputs or "logits" not in outputs:
        raise BrainMRIError(f"{path}: not a brainmri export (expects an input 'image' and an output 'logits')")
    dims = [d.dim_value for d in inputs["image"].type.tensor_type.shape.dim]
    if len(dims) == 4 and (dims[2], dims[3]) != (card["image_size"],) * 2:
        raise BrainMRIError(
            f"{path}: the graph takes {dims[2]}x{dims[3]} images but its card says {card['image_size']}"
        )
    out = [d.dim_value for d in outputs["logits"].type.tensor_type.shape.dim]
    if len(out) == 2 and out[1] and out[1] != len(card["classes"]):
        raise BrainMRIError(f"{path}: the graph has {out[1]} outputs but its card names {len(card['classes'])} classes")


def make_session(proto: Any, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations; ``run`` is thread-safe."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    data = proto if isinstance(proto, bytes) else proto.SerializeToString()
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BrainMRIError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


def read_card(path: str | Path) -> ModelCard:
    """The model card of a checkpoint, run folder, folder export or ``.onnx`` export."""
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path)[1]
    from brainmri.models.checkpoint import read_checkpoint

    card = read_checkpoint(path).get("card")
    if not isinstance(card, dict):
        raise BrainMRIError(f"{path}: checkpoint without a model card")
    return cast(ModelCard, card)  # checked by read_checkpoint


def default_output(model_path: str | Path, quantize: str | None = None) -> Path:
    """``runs/x/checkpoints/best.pt`` -> ``runs/x/checkpoints/best.onnx`` (``best.int8.onnx``)."""
    path = Path(model_path)
    if path.is_dir():
        path = RunDir(path).best
    if path.suffix.lower() == ".onnx":
        path = path.with_suffix("")
    return path.with_suffix(".int8.onnx" if quantize else ".onnx")


def export_model(
    model_path: str | Path,
    output: str | Path | None = None,
    fmt: str = "onnx",
    opset: int = OPSET,
    dynamo: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export a checkpoint (or run folder) to ONNX with its card, or to a folder (``fmt``
    "folder", ``output`` the folder); returns the written path. An existing output is replaced
    only with ``overwrite`` (checked before the export)."""
    import onnx

    from brainmri.files import atomic_write_bytes, check_output
    from brainmri.models.checkpoint import load_model

    if fmt not in FORMATS:
        raise BrainMRIError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "folder":
        if output is None:
            raise BrainMRIError("--format folder needs the folder to write: --out DIR")
        return export_folder(model_path, output, overwrite=overwrite)
    lowest, newest = MIN_OPSET["dynamo" if dynamo else "legacy"], onnx.defs.onnx_opset_version()
    if not lowest <= opset <= newest:
        hint = "" if dynamo else " with --legacy"
        raise BrainMRIError(f"--opset must be between {lowest} and {newest}{hint}, got {opset}")
    out = Path(output) if output is not None else default_output(model_path)
    if out.suffix.lower() != ".onnx":
        raise BrainMRIError(f"output file must end in .onnx, not {out.name!r}")
    check_output(out, overwrite)
    model, card = load_model(model_path)
    scorer = _input_check_scorer(model_path)
    outputs = ["logits", "probabilities"] + (["ood_score"] if scorer is not None else [])  # input_check.ONNX_OUTPUT
    card = card.copy()
    card["export"] = {"format": "onnx", "opset": opset, "input": "image", "outputs": outputs}
    proto = to_onnx(model, card, opset=opset, dynamo=dynamo, scorer=scorer)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def export_folder(model_path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out`` (:mod:`brainmri.models.folder`): ``config.json`` (the card, with what
    evaluation and calibration recorded), ``model.safetensors``, the input check's statistics
    when calibrated, and ``README.md``. The model is built and its weights checked first, so a
    damaged checkpoint is refused before anything is written."""
    from brainmri.files import shown
    from brainmri.inference.input_check import STATS_KEY, InputCheck
    from brainmri.inference.model_readme import model_readme
    from brainmri.models.checkpoint import model_from_checkpoint, read_checkpoint
    from brainmri.models.folder import FOLDER_CONFIG, FOLDER_README, FOLDER_WEIGHTS, write_folder

    out = Path(out)
    if out.exists() and not overwrite:
        raise BrainMRIError(f"{shown(out)} already exists; pass --overwrite to replace it")
    ckpt = read_checkpoint(model_path)
    _, card = model_from_checkpoint(ckpt, model_path)  # builds the model: a damaged checkpoint fails here
    InputCheck.from_checkpoint(ckpt)  # damaged statistics are refused here, not by the folder's users
    groups = {STATS_KEY: ckpt[STATS_KEY]} if isinstance(ckpt.get(STATS_KEY), dict) else {}
    card = card.copy()
    card["export"] = {"format": "folder", "weights": FOLDER_WEIGHTS, "card": FOLDER_CONFIG}
    files = [FOLDER_CONFIG, FOLDER_WEIGHTS, *[f"{key}.safetensors" for key in groups], FOLDER_README]
    state = {k: v.detach().cpu() for k, v in ckpt["model_state"].items()}  # as trained; the loaded model is folded
    return write_folder(out, card, state, groups, model_readme(card, files), overwrite=overwrite)


def _input_check_scorer(model_path: str | Path) -> nn.Module | None:
    """The calibrated input check's score module, to travel in the graph; None if uncalibrated."""
    from brainmri.inference.input_check import InputCheck
    from brainmri.models.checkpoint import read_checkpoint

    extra = InputCheck.from_checkpoint(read_checkpoint(model_path)).extra
    return extra if isinstance(extra, nn.Module) else None


def _lines(value: Any, indent: int) -> list[str]:
    """A card entry as indented lines; every key and value on one line with its control
    characters escaped (:func:`brainmri.files.one_line`): a card may come from anyone, and a
    newline or an escape code in it must neither fake a line nor reach the terminal raw."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [f"{pad}(not recorded)"]
        out = []
        for k, v in value.items():
            if isinstance(v, dict) and v and indent < 4:
                out.append(f"{pad}{one_line(str(k))}:")
                out.extend(_lines(v, indent + 2))
            else:
                text = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                out.append(f"{pad}{one_line(str(k))}: {one_line(text)}")
        return out
    if isinstance(value, list):
        return [f"{pad}{one_line(', '.join(map(str, value)))}"]
    return [f"{pad}{one_line(str(value))}"]


def format_card(card: Mapping[str, Any]) -> str:
    """The card as readable text, most important facts first and the notice last."""
    sections = [
        ("Architecture", f"{card.get('arch', '?')} (fine-tuning: {card.get('finetune', '?')})"),
        ("Classes (output order)", card.get("classes", [])),
        ("Image size", f"{card.get('image_size', '?')} x {card.get('image_size', '?')}"),
        ("Preprocessing", card.get("preprocessing", {})),
        ("Weights origin", card.get("weights_origin", card.get("weights", "?"))),
        ("Training data", card.get("training_data", {})),
        ("Split", card.get("split", {})),
        ("Metrics", card.get("metrics", {})),
        ("Intended use", card.get("intended_use", "")),
        ("Limitations", card.get("limitations", "")),
    ]
    check = card.get("input_check")
    if isinstance(check, dict) and isinstance(check.get("image_statistics"), dict):
        image = dict(check["image_statistics"])  # the matrix is for the program, its size for the reader
        for key, what in (("transform", "a matrix of {} rows"), ("centre", "a vector of {} values")):
            if isinstance(image.get(key), list):
                image[key] = what.format(len(image[key])) + ", in the card"
        check = {**check, "image_statistics": image}
    sections.append(("Input check", check if check else "size, near-constant and colour checks only (not calibrated)"))
    if "export" in card:
        sections.append(("Export", card["export"]))
    lines = [f"Model card: {one_line(str(card.get('name', '?')))}"]
    meta = [
        f"created {card['created']}" if card.get("created") else "",
        f"brainmri {card.get('brainmri_version', '?')}",
    ]
    lines.append("  " + one_line(", ".join(m for m in meta if m)))
    for title, value in sections:
        lines.append("")
        lines.append(f"{title}:")
        lines.extend(_lines(value, 2))
    lines.append("")
    lines.append(f"NOTICE: {one_line(str(card.get('notice', '')))}")
    return "\n".join(lines)


def quantize_int8(
    fp32_path: str | Path,
    output: str | Path,
    calibration: list[Any],
    check_fraction: float = 0.5,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real slices.

    ``calibration`` is a list of uint8 (H, W) slices at the model's image size. Half of them
    calibrate the activation ranges; the other half measure how far the int8 model strays
    from the float model (top-1 agreement, largest probability difference). The measurement
    is stored in the card, so the file itself says what was lost.
    """
    import tempfile

    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from brainmri.files import atomic_write_bytes, check_output
    from brainmri.inference.forward import probabilities
    from brainmri.io.preprocess import stack, to_input

    check_output(output, overwrite)
    if len(calibration) < 4:
        raise BrainMRIError(f"int8 calibration needs at least 4 readable slices, got {len(calibration)}")
    proto, card = load_onnx(fp32_path)
    n_check = max(2, int(len(calibration) * check_fraction))
    calib, check = calibration[:-n_check], calibration[-n_check:]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": to_input(stack([a])).numpy()} for a in calib])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, quant = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(quant),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        import onnx

        qproto = onnx.load(str(quant))
    x = stack(check)
    flip = bool(card.get("tta"))
    p32 = probabilities(make_session(proto), x, flip=flip)
    p8 = probabilities(make_session(qproto), x, flip=flip)
    agreement = {
        "images": len(check),
        "calibration_images": len(calib),
        "top1_agreement": float((p32.argmax(1) == p8.argmax(1)).mean()),
        "max_abs_probability_difference": float(np.abs(p32 - p8).max()),
    }
    export = dict(card.get("export", {}), quantization="int8 static (QDQ, per-channel weights)", int8_check=agreement)
    set_card(qproto, dict(card, export=export))
    atomic_write_bytes(output, qproto.SerializeToString())
    return agreement


def load_calibration(
    paths: list[str], image_size: int, limit: int = 64, via: int | None = None, warn: Any = None
) -> list[Any]:
    """Up to ``limit`` readable slices, evenly spread over the expanded (sorted) paths, so a
    dataset folder's classes are all represented; the order is shuffled with a fixed seed so
    that the calibration and check halves both see every class."""
    import random

    from brainmri.io.images import ImageError
    from brainmri.io.paths import expand_paths
    from brainmri.io.preprocess import to_array

    files = expand_paths(paths)
    step = max(1, len(files) // limit)
    files = files[::step][:limit]
    random.Random(0).shuffle(files)
    arrays = []
    for f in files:
        try:
            arrays.append(to_array(f, image_size, via=via))
        except ImageError as exc:
            if warn is not None:
                warn(f"calibration: skipped {f}: {exc}")
            continue
    return arrays
