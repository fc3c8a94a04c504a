"""One training step of the scratch recipe (augmentation, forward, label-smoothed loss,
backward, AdamW, EMA; bf16 autocast where the CPU has it, channels-last), eager or through
``torch.compile`` (inductor), on random uint8 batches: prints one JSON line.

    python compile_step.py ARCH SIZE BATCH MODE STEPS     # MODE: eager, default (torch.compile's mode)

``first_s`` is the first step (for a compiled step: the compilation); then 2 warm-up steps and
STEPS timed ones, of which the median is reported.
"""

import json
import sys
import time

import torch

from brainmri.config import TrainConfig
from brainmri.experiments.reproduce import PRESETS
from brainmri.models.build import build_model
from brainmri.runtime import resolve_precision
from brainmri.training.loop import build_parts, train_step

arch = sys.argv[1]
size = int(sys.argv[2])
batch = int(sys.argv[3])
mode = sys.argv[4]
steps = int(sys.argv[5])
torch.manual_seed(0)
config = TrainConfig.from_dict(
    {**PRESETS["scratch"], "image_size": size, "progressive": "", "arch": arch, "batch_size": batch, "device": "cpu"}
)
device = torch.device("cpu")
precision = resolve_precision(config.precision, device)
model = build_model(arch, "none", 4)
labels = torch.randint(0, 4, (batch,))
parts = build_parts(model, config.loop_section(), labels.repeat(64), precision, device)
if mode != "eager":
    parts.net = torch.compile(parts.model, mode=None if mode == "default" else mode)
images = torch.randint(0, 255, (batch, 1, size, size), dtype=torch.uint8)
gen = torch.Generator().manual_seed(0)
t = time.perf_counter()
train_step(parts, parts.augment(images, generator=gen), labels)
first = time.perf_counter() - t
for _ in range(2):
    train_step(parts, parts.augment(images, generator=gen), labels)
times = []
for _ in range(steps):
    x = parts.augment(images, generator=gen)
    t = time.perf_counter()
    train_step(parts, x, labels)
    times.append(time.perf_counter() - t)
times.sort()
med = times[len(times) // 2]
print(
    json.dumps(
        {
            "arch": arch,
            "size": size,
            "batch": batch,
            "mode": mode,
            "precision": precision,
            "first_s": round(first, 1),
            "median_step_s": round(med, 4),
            "img_per_s": round(batch / med, 1),
            "min": round(times[0], 4),
            "max": round(times[-1], 4),
        }
    ),
    flush=True,
)
