"""Training images/s of a bare ResNet-50 step at SIZE px, batch 32 (bf16 autocast, channels-last,
fused AdamW, random data) with THREADS intra-op threads: whether two trainings at once, one
thread each, would beat one after the other on 2 cores.

    python step_rate_threads.py THREADS LABEL SIZE    # prints: [THREADS, LABEL, SIZE] threads images/s
"""

import statistics
import sys
import time

import torch
import torchvision

torch.set_num_threads(int(sys.argv[1]))
size, batch = int(sys.argv[3]), 32
torch.manual_seed(0)
model = torchvision.models.resnet50(num_classes=4).to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
x = torch.rand(batch, 3, size, size).to(memory_format=torch.channels_last)
y = torch.randint(0, 4, (batch,))


def step() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


for _ in range(3):
    step()
times = []
for _ in range(10):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(sys.argv[1:], "threads", round(batch / statistics.median(times), 1), flush=True)
