"""The GPU path: tests marked ``cuda`` run where a CUDA GPU is (scripts/gpu_check.sh runs them
there) and are skipped elsewhere. They use the command line only, so that they check what a
user runs."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.sh there)"),
]


@pytest.fixture(scope="module")
def gpu_run(small_raw, tmp_path_factory):
    from brainmri.cli import main

    base = tmp_path_factory.mktemp("gpu")
    assert main(["data", "prepare", str(small_raw), str(base / "prepared"), "--size", "64"]) == 0
    args = ["train", "--data", str(base / "prepared"), "--arch", "resnet18", "--weights", "none", "--epochs", "2",
            "--image-size", "64", "--batch-size", "8", "--val-size", "0.3", "--device", "cuda", "--precision", "auto",
            "--runs-dir", str(base / "runs"), "--name", "gpu", "--quiet"]  # fmt: skip
    assert main(args) == 0
    return base / "runs" / "gpu"


def test_training_on_the_gpu_records_its_device_and_precision(gpu_run):
    env = json.loads((gpu_run / "environment.json").read_text())
    summary = json.loads((gpu_run / "summary.json").read_text())
    assert env["device"].startswith("cuda") and summary["finished"]
    assert summary["precision"] in ("bf16", "fp16")  # autocast where the GPU has it
    assert json.loads((gpu_run / "config.json").read_text())["channels_last"] is True


def test_gpu_and_cpu_inference_agree(gpu_run):
    from brainmri.cli import main

    assert main(["evaluate", str(gpu_run), "--device", "cuda", "--bootstrap", "0", "--overwrite"]) == 0
    on_gpu = (gpu_run / "predictions.csv").read_text().splitlines()
    assert main(["evaluate", str(gpu_run), "--device", "cpu", "--bootstrap", "0", "--overwrite"]) == 0
    on_cpu = (gpu_run / "predictions.csv").read_text().splitlines()
    for a, b in zip(on_gpu[1:], on_cpu[1:], strict=True):
        pa, pb = [float(v) for v in a.split(",")[3:7]], [float(v) for v in b.split(",")[3:7]]
        assert max(abs(x - y) for x, y in zip(pa, pb, strict=True)) < 1e-3  # fp32 on both, kernels differ


def test_the_model_input_is_the_same_on_the_gpu():
    from brainmri.io.preprocess import to_input

    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    assert torch.equal(to_input(levels.cuda()).cpu(), to_input(levels))
