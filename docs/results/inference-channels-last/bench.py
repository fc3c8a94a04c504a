"""evaluate_run on the test side and the external folder, the model loaded channels-last (the
code at this commit) or converted back to NCHW, alternated; seconds per evaluation."""

import json
import time

import torch

import brainmri.evaluation.evaluate as ev
from brainmri.models import checkpoint

EXTERNAL = "/work/shared/datasets/brain-tumor-mri-external"
real = checkpoint.model_from_checkpoint


def nchw(*args, **kwargs):
    model, card = real(*args, **kwargs)
    return model.to(memory_format=torch.contiguous_format), card


out = []
for rep in range(3):
    for fmt in ("channels_last", "nchw"):
        ev.model_from_checkpoint = real if fmt == "channels_last" else nchw
        for arch in ("resnet50", "resnet152"):
            run = f"/work/exp/cl/runs/{arch}"
            start = time.perf_counter()
            test = ev.evaluate_run(run, n_bootstrap=1000, device="cpu", overwrite=True, figures=False)
            test_s = time.perf_counter() - start
            start = time.perf_counter()
            ext = ev.evaluate_run(
                run, data=EXTERNAL, name="ext", n_bootstrap=1000, device="cpu", overwrite=True, figures=False
            )
            external_s = time.perf_counter() - start
            row = {
                "rep": rep,
                "format": fmt,
                "arch": arch,
                "test_s": round(test_s, 2),
                "external_s": round(external_s, 2),
                "test_acc": test["accuracy"],
                "external_acc": ext["accuracy"],
            }
            print(json.dumps(row), flush=True)
            out.append(row)
with open("/work/exp/cl/bench.json", "w") as fh:
    json.dump(out, fh, indent=1)
