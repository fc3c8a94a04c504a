"""fp32 inference with batch-norm folded into the convolutions against the model as it was
loaded before (channels-last, BatchNorm kept): the same weights, alternated, median of 3.

    python bench.py SIZE N ARCH...   # N slices with flip averaging, batches of 64: e.g. 64 540 resnet50
    python bench.py latency SIZE ARCH...   # one slice at a time, no flips: median of 60
"""

import copy
import json
import statistics
import sys
import time

import torch

from brainmri.inference.forward import probabilities
from brainmri.models.build import build_model
from brainmri.models.folding import fold_batch_norm


def models(arch: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model as loaded before (BatchNorm kept) and folded, both channels-last."""
    torch.manual_seed(0)
    model = build_model(arch, weights="none", num_classes=4)
    with torch.no_grad():  # running statistics that are not the initial 0 and 1
        for _ in range(3):
            model(torch.rand(16, 1, size, size))
    model.eval().to(memory_format=torch.channels_last)
    return model, fold_batch_norm(copy.deepcopy(model)).to(memory_format=torch.channels_last)


def latency(size: int, archs: list[str]) -> None:
    image = torch.randint(0, 256, (1, 1, size, size), dtype=torch.uint8)
    for arch in archs:
        model, folded = models(arch, size)
        times: dict[str, list[float]] = {"kept": [], "folded": []}
        for i in range(65):
            for name, m in (("kept", model), ("folded", folded)):
                start = time.perf_counter()
                probabilities(m, image)
                if i >= 5:  # 5 warm-up calls
                    times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(json.dumps({"arch": arch, "size": size, "single_image_p50_ms": med,
                          "speed-up": med["kept"] / med["folded"]}), flush=True)  # fmt: skip


def main(size: int, n: int, archs: list[str]) -> list[dict]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)
    rows = []
    for arch in archs:
        model, folded = models(arch, size)
        kept, fold = probabilities(model, images, flip=True), probabilities(folded, images, flip=True)
        times: dict[str, list[float]] = {"kept": [], "folded": []}
        for _ in range(3):
            for name, m in (("kept", model), ("folded", folded)):
                start = time.perf_counter()
                probabilities(m, images, flip=True)
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({
            "arch": arch, "size": size, "images": n, "flip": True, "seconds": med, "runs": times,
            "speed-up": med["kept"] / med["folded"], "max_abs_probability_difference": float(abs(kept - fold).max()),
            "same_predictions": float((kept.argmax(1) == fold.argmax(1)).mean()),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "latency":
        latency(int(sys.argv[2]), sys.argv[3:])
    else:
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
