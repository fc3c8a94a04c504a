"""Single-slice ONNX Runtime latency under each session option, beside the floor ONNX Runtime's own
convolution rate sets, so that the option ``make_session`` uses is chosen on a measurement.

    python scripts/onnx_latency.py --out docs/results/onnx-latency [--arch resnet50 --size 256]

It exports an untrained model (latency does not depend on the weights) with ``brainmri export``'s
code, then times ``session.run`` on one slice for every combination of graph optimisation level,
intra-op threads and thread spinning, and ``Predictor.predict_arrays`` (what ``predict`` and the
web app call: the session chosen by ``make_session``, plus preprocessing, flip averaging and the
input check). The floor: the forward pass's FLOPs at the best rate ONNX Runtime reaches on one
large convolution alone (ResNet-50's 3x3 and 1x1 shapes, one slice, the same session options),
which no whole graph beats. Run it on an otherwise idle machine: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from brainmri.bench.inference import make_checkpoint
from brainmri.bench.measure import flops_per_image, machine_info, matmul_max_size, matmul_peak
from brainmri.inference import export
from brainmri.inference.predictor import Predictor

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def p50(run, repeats: int) -> float:
    """Median milliseconds of ``run()`` after three untimed calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


#: Convolutions of ResNet-50's stages at 256 px (channels, feature map side, kernel): the floor is
#: the best rate over them.
CONVS = ((64, 64, 3), (128, 32, 3), (256, 16, 3), (256, 64, 1), (1024, 16, 1))


def conv_gflops(channels: int, side: int, kernel: int, repeats: int) -> float:
    """GFLOP/s of ONNX Runtime running one ``channels`` -> ``channels`` convolution on one slice."""
    rng = np.random.default_rng(0)
    weight = ((rng.random((channels, channels, kernel, kernel)) - 0.5) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[kernel // 2] * 4)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, side, side])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    x = rng.random((1, channels, side, side), dtype=np.float32)
    ms = p50(lambda: session.run(["y"], {"x": x}), repeats)
    return 2 * channels * channels * kernel * kernel * side * side / ms / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(args.arch, args.size, Path(tmp) / "m.pt")
        onnx_path = Path(export.export_model(ckpt, Path(tmp) / "m.onnx"))
        data = onnx_path.read_bytes()
        pixels = np.random.default_rng(0).integers(0, 256, (args.size, args.size), dtype=np.uint8)
        image = (pixels.astype(np.float32) / 255.0)[None, None]  # the graph's input: floats in [0, 1]
        rows = []
        for level, threads, spin in itertools.product(LEVELS, (0, 1, 2), ("1", "0")):
            opts = ort.SessionOptions()
            opts.graph_optimization_level = LEVELS[level]
            opts.intra_op_num_threads = threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
            session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
            ms = p50(lambda s=session: s.run(["logits"], {"image": image}), args.repeats)
            rows.append({"level": level, "threads": threads, "spinning": spin == "1", "p50_ms": ms})
            print(f"{level:>9} threads {threads} spinning {spin}: {ms:.1f} ms", flush=True)
        predictor = Predictor(onnx_path, device="cpu", backend="onnx")
        through_predictor = p50(lambda: predictor.predict_arrays([pixels]), args.repeats)
    cpu = torch.device("cpu")
    peak = {"fp32_gflops": matmul_peak(cpu, torch.float32, matmul_max_size(cpu))["gflops"]}
    convs = [{"channels": c, "side": h, "kernel": k, "gflops": conv_gflops(c, h, k, args.repeats)} for c, h, k in CONVS]
    conv_rate = max(c["gflops"] for c in convs)
    forward = flops_per_image(args.arch, args.size, backward=False)
    floor = forward / (conv_rate * 1e9) * 1000
    best = min(rows, key=lambda r: r["p50_ms"])
    record = {
        "arch": args.arch,
        "image_size": args.size,
        "repeats": args.repeats,
        "sessions": rows,
        "best": best,
        "predictor_p50_ms": through_predictor,
        "forward_gflop": forward / 1e9,
        "fp32_matmul_gflops": peak["fp32_gflops"],
        "onnx_conv_gflops": convs,
        "ms_at_best_onnx_conv_rate": floor,
        "best_session_fraction_of_conv_rate": floor / best["p50_ms"],
        "machine": machine_info(torch.device("cpu")),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    (out / "onnx_latency.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# ONNX Runtime single-slice latency, {args.arch} at {args.size} px, fp32",
        "",
        f"Measured with `python scripts/onnx_latency.py --arch {args.arch} --size {args.size} --out ...` on "
        f"{record['machine']['cpu']} ({record['machine']['cores']} cores), load average "
        f"{load_start[0]:.1f} at the start. Median of {args.repeats} runs of one slice.",
        "",
        "| graph optimisation | intra-op threads (0: ONNX Runtime's choice) | spinning | p50 ms |",
        "|---|---|---|---|",
        *[f"| {r['level']} | {r['threads']} | {'on' if r['spinning'] else 'off'} | {r['p50_ms']:.1f} |" for r in rows],
        "",
        f"Best: {best['level']}, {best['threads']} threads, spinning {'on' if best['spinning'] else 'off'}: "
        f"**{best['p50_ms']:.1f} ms**. Through `Predictor.predict_arrays` (the session `make_session` builds, "
        f"with preprocessing, flip averaging as the card asks and the input check): {through_predictor:.1f} ms.",
        f"The floor: {forward / 1e9:.2f} GFLOP a forward pass at the best rate ONNX Runtime reaches on one "
        f"convolution alone here ({conv_rate:.0f} GFLOP/s; PyTorch's fp32 matmul: {peak['fp32_gflops']:.0f} GFLOP/s) "
        f"takes {floor:.1f} ms; the best session runs at {100 * floor / best['p50_ms']:.0f} % of that rate. "
        "The gap between the best session and the Predictor is the work the Predictor adds per slice: "
        "preprocessing, the input check and, where the card asks for it, flip averaging.",
    ]
    (out / "onnx_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))


if __name__ == "__main__":
    main()
