"""The ONNX export of a ResNet-50 in NCHW against the same model in channels-last: the graph's
operators, single-slice latency (median of 20 runs, three alternated repeats) and the logits."""

import collections
import statistics
import time

import numpy as np
import torch

from brainmri.inference.export import make_session, to_onnx
from brainmri.labels import CLASSES
from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model
from brainmri.models.card import make_card

torch.manual_seed(0)
model = build_model("resnet50", weights="none").eval()
card = make_card("resnet50", 256, "none", CLASSES, IMAGENET_MEAN, IMAGENET_STD)
protos = {"nchw": to_onnx(model, card)}
model.to(memory_format=torch.channels_last)
protos["channels_last"] = to_onnx(model, card)
for name, proto in protos.items():
    print(name, collections.Counter(n.op_type for n in proto.graph.node).most_common(8))
sessions = {name: make_session(proto) for name, proto in protos.items()}
one = {"image": np.random.default_rng(0).random((1, 1, 256, 256)).astype(np.float32)}
p50: dict[str, list[float]] = {name: [] for name in sessions}
for _ in range(3):
    for name, session in sessions.items():
        for _ in range(3):
            session.run(["logits"], one)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            session.run(["logits"], one)
            times.append((time.perf_counter() - start) * 1000)
        p50[name].append(statistics.median(times))
print("p50 ms", {name: [round(v, 1) for v in values] for name, values in p50.items()})
four = {"image": np.random.default_rng(1).random((4, 1, 256, 256)).astype(np.float32)}
a, b = (sessions[name].run(["logits"], four)[0] for name in ("nchw", "channels_last"))
print("max abs difference of the logits", float(np.abs(a - b).max()))
