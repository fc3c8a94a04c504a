"""Inference timings of ``brainmri bench``: one slice's latency and batch throughput of the
PyTorch model, its ONNX Runtime export and its int8 export, each through
:class:`brainmri.inference.predictor.Predictor` (and so :func:`brainmri.inference.forward.probabilities`): the path
``brainmri predict`` and the web app take."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from brainmri.bench.measure import flops_per_image, percentile

if TYPE_CHECKING:
    from brainmri.inference.predictor import Predictor


def time_predictor(
    predictor: Predictor, arrays: Sequence[np.ndarray], latency_runs: int, batch_runs: int
) -> dict[str, float]:
    """Latency of one slice (median, 95th percentile) and throughput of batches of 32 through
    ``Predictor.predict_arrays``: what ``brainmri predict`` and the web app call."""
    batch = [arrays[i % len(arrays)] for i in range(32)]
    for _ in range(2):
        predictor.predict_arrays(batch[:1])
    latencies = []
    for i in range(latency_runs):
        start = time.perf_counter()
        predictor.predict_arrays([arrays[i % len(arrays)]])
        latencies.append((time.perf_counter() - start) * 1000)
    predictor.predict_arrays(batch)
    start = time.perf_counter()
    for _ in range(batch_runs):
        predictor.predict_arrays(batch)
    return {
        "latency_ms_p50": statistics.median(latencies),
        "latency_ms_p95": percentile(latencies, 95),
        "batch32_ips": 32 * batch_runs / (time.perf_counter() - start),
    }


def time_inference(
    checkpoint: Path,
    arrays: Sequence[np.ndarray],
    device: torch.device,
    latency_runs: int,
    batch_runs: int,
    int8: bool = False,
) -> dict[str, dict[str, float]]:
    """:func:`time_predictor` for the PyTorch model, its ONNX Runtime export (CPU provider) and,
    with ``int8``, the int8 export of ``brainmri export --quantize int8`` calibrated on ``arrays``."""
    from brainmri.inference import export
    from brainmri.inference.predictor import Predictor

    onnx_path = export.export_model(checkpoint, checkpoint.with_suffix(".onnx"))
    models = {"torch": (checkpoint, str(device)), "onnx": (onnx_path, "cpu")}
    if int8 and hasattr(export, "quantize_int8"):
        int8_path = checkpoint.with_suffix(".int8.onnx")
        export.quantize_int8(onnx_path, int8_path, list(arrays))
        models["onnx_int8"] = (int8_path, "cpu")
    out: dict[str, dict[str, float]] = {}
    for name, (path, dev) in models.items():
        predictor = Predictor(path, device=dev, backend="torch" if name == "torch" else "onnx")
        out[name] = time_predictor(predictor, arrays, latency_runs, batch_runs)
        del predictor
        gc.collect()
    return out


def make_checkpoint(arch: str, image_size: int, path: Path) -> Path:
    """An untrained checkpoint of ``arch``: inference speed does not depend on the weights."""
    from brainmri.labels import CLASSES
    from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model
    from brainmri.models.card import make_card
    from brainmri.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(arch, weights="none")
    save_checkpoint(path, model, make_card(arch, image_size, "none", CLASSES, IMAGENET_MEAN, IMAGENET_STD))
    return path


def inference_summary(
    work: Path, files: Sequence[Path], device: torch.device, settings: dict[str, Any], quick: bool, fp32_gflops: float
) -> dict[str, Any]:
    """Every inference number of the bench for ``settings["infer_arch"]``: the timings of
    :func:`time_inference` on up to 32 of ``files`` (int8 too unless ``quick``), and the forward
    pass's FLOPs at the measured fp32 matmul rate: what one image costs in fp32 at best-known speed."""
    from brainmri.io.preprocess import to_array

    arch, size = settings["infer_arch"], settings["image_size"]
    ckpt = make_checkpoint(arch, size, work / "infer.pt")
    arrays = [to_array(f, size) for f in files[:32]]
    out: dict[str, Any] = {
        "arch": arch,
        **time_inference(ckpt, arrays, device, settings["latency_runs"], settings["batch_runs"], int8=not quick),
    }
    forward = flops_per_image(arch, size, backward=False)
    out["forward_gflop_per_image"] = forward / 1e9
    out["ms_at_fp32_matmul_peak"] = forward / (fp32_gflops * 1e9) * 1000
    return out
