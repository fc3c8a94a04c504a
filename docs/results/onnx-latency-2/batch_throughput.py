"""Batch-32 images/s through Predictor.predict_arrays (ONNX and PyTorch backends), ResNet-50 at 256 px, untrained:
the runs of batch.txt, with PYTHONPATH set to the commit named in each line."""
import statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
from brainmri.bench.inference import make_checkpoint
from brainmri.inference import export
from brainmri.inference.predictor import Predictor
tmp = tempfile.mkdtemp()
ck = make_checkpoint("resnet50", 256, Path(tmp) / "m.pt")
p = Path(export.export_model(ck, Path(tmp) / "m.onnx"))
out = {}
for backend, path in (("onnx", p), ("torch", ck)):
    pred = Predictor(path, device="cpu", backend=backend)
    arrays = list(np.random.default_rng(0).integers(0, 256, (32, 256, 256), dtype=np.uint8))
    pred.predict_arrays(arrays)
    t = []
    for _ in range(5):
        s = time.perf_counter(); pred.predict_arrays(arrays); t.append(time.perf_counter() - s)
    out[backend] = round(32 / statistics.median(t), 1)
print(sys.argv[1], "batch-32 images/s", out)
