"""Batch-32 images/s through Predictor.predict_arrays (ONNX and PyTorch backends), ResNet-50 at
256 px, untrained: the runs of batch.txt, with PYTHONPATH set to the commit named in each line.

    PYTHONPATH=WORKTREE/src python batch_throughput.py LABEL
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brainmri.bench.inference import make_checkpoint
from brainmri.inference import export
from brainmri.inference.predictor import Predictor

tmp = Path(tempfile.mkdtemp())
checkpoint = make_checkpoint("resnet50", 256, tmp / "m.pt")
onnx_path = Path(export.export_model(checkpoint, tmp / "m.onnx"))
rates = {}
for backend, path in (("onnx", onnx_path), ("torch", checkpoint)):
    predictor = Predictor(path, device="cpu", backend=backend)
    arrays = list(np.random.default_rng(0).integers(0, 256, (32, 256, 256), dtype=np.uint8))
    predictor.predict_arrays(arrays)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        predictor.predict_arrays(arrays)
        times.append(time.perf_counter() - start)
    rates[backend] = round(32 / statistics.median(times), 1)
print(sys.argv[1], "batch-32 images/s", rates)
