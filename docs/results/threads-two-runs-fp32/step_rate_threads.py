"""Training images/s of a bare ResNet-50 step at SIZE px, batch 32 (PRECISION: bf16 autocast or
fp32; channels-last, fused AdamW, random data) with THREADS intra-op threads: whether two
trainings at once, one thread each, would beat one after the other on 2 cores. The script of
../threads-two-runs with the precision as an argument.

    python step_rate_threads.py THREADS LABEL SIZE PRECISION   # prints: [arguments] threads images/s
"""

import contextlib
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
bf16 = sys.argv[4] == "bf16"


def step() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
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
