"""ResNet-50 fp32 forward passes through inference.forward.probabilities, NCHW against
channels-last, alternated: images/s at 128 and 256 px (64 random slices, batches of 32)."""

import copy
import time

import torch

from brainmri.inference.forward import probabilities
from brainmri.models.build import build_model

torch.manual_seed(0)
for size in (128, 256):
    x = torch.randint(0, 256, (64, 1, size, size), dtype=torch.uint8)
    nchw = build_model("resnet50", weights="none").eval()
    models = {"nchw": nchw, "cl": copy.deepcopy(nchw).to(memory_format=torch.channels_last)}
    rates: dict[str, list[float]] = {"nchw": [], "cl": []}
    for _ in range(3):
        for name, model in models.items():
            probabilities(model, x[:8])  # warm-up
            start = time.perf_counter()
            probabilities(model, x, batch_size=32)
            rates[name].append(64 / (time.perf_counter() - start))
    print(size, {k: [round(v, 1) for v in vs] for k, vs in rates.items()})
