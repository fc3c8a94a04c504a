"""Training images/s of a bare ResNet-50 step (bf16 autocast, channels-last, fused AdamW, random
data, no augmentation or EMA) at batches of 64 and 128, alternated, at one image size:
whether a larger batch pays where a step is short.

    python step_rate.py SIZE    # prints: size batch images/s, four lines (64, 128, 128, 64)
"""

import statistics
import sys
import time

import torch
import torchvision

torch.manual_seed(0)
size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = torchvision.models.resnet50(num_classes=4).to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)


def rate(batch: int, steps: int = 6) -> float:
    """Images/s of the median of ``steps`` timed steps after two untimed ones."""
    x = torch.rand(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


for batch in (64, 128, 128, 64):
    print(size, batch, round(rate(batch), 1), flush=True)
