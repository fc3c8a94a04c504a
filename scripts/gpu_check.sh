#!/usr/bin/env bash
# The GPU path, checked in one run and written under one folder (default ./gpu-check):
#   1. the machine (nvidia-smi, torch, CUDA);
#   2. the tests marked for CUDA (tests/test_cuda.py: they skip without a GPU);
#   3. brainmri bench on the device (bf16 autocast where native, channels-last);
#   4. the scratch preset's ResNet-50 trained on the device, then evaluated on the test side and
#      the external folder;
#   5. a one-process torchrun of the same training (NCCL on a GPU, gloo on a CPU).
# With a GPU it runs the full preset (40 epochs; within 10 minutes on one H200). Without one it
# runs a reduced mode on the CPU (tiny images, one epoch, the bench at 32 px with ResNet-18 for
# inference), which tests/test_gpu_script.py runs, so the script stays runnable where no GPU is.
# Wheels in .whl/ (carried to a machine that cannot reach a registry) are installed first.
#
#   scripts/gpu_check.sh [OUT]        env: DATA, EXTERNAL (datasets), MODE=auto|full|reduced, PYTHON
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
source scripts/gpu_setup.sh
if [ "$MODE" = full ]; then
    TRAIN=(--config configs/scratch.yaml)
    BENCH=(--steps 40 --warmup 10)
    TORCHRUN=(--config configs/scratch.yaml --epochs 2)
else
    TRAIN=(--config configs/scratch.yaml --progressive none --epochs 1 --image-size 32 --limit-per-class 8 --batch-size 8)
    BENCH=(--quick --image-size 32 --infer-arch resnet18)
    TORCHRUN=("${TRAIN[@]}")
fi
BRAINMRI=("$PY" -m brainmri)
: > "$OUT/steps.tsv"

step() {  # step NAME COMMAND...: its output in NAME.log, its exit status and seconds in steps.tsv
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >> "$OUT/steps.tsv"
    echo "gpu_check: $name exit $rc"
}

step environment "$PY" -c "
import platform, torch
print('mode $MODE, device $DEVICE; python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda)
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), 'bf16', torch.cuda.is_bf16_supported())
"
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step tests "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step bench "${BRAINMRI[@]}" bench --device "$DEVICE" --archs resnet50 "${BENCH[@]}" --json "$OUT/bench.json"
step prepare "${BRAINMRI[@]}" data prepare "$DATA" "$OUT/prepared" --size 256 --overwrite
step train "${BRAINMRI[@]}" train "${TRAIN[@]}" --arch resnet50 --device "$DEVICE" --data "$OUT/prepared" \
    --runs-dir "$OUT/runs" --name scratch-resnet50 --overwrite --quiet
step evaluate "${BRAINMRI[@]}" evaluate "$OUT/runs/scratch-resnet50" --device "$DEVICE" --overwrite
step evaluate-external "${BRAINMRI[@]}" evaluate "$OUT/runs/scratch-resnet50" --data "$EXTERNAL" --device "$DEVICE" \
    --overwrite
step torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m brainmri train "${TORCHRUN[@]}" \
    --arch resnet50 --device "$DEVICE" --data "$OUT/prepared" --runs-dir "$OUT/runs" --name torchrun-resnet50 \
    --overwrite --quiet

"$PY" - "$OUT" "$MODE" "$DEVICE" <<'PYEOF'
import csv, json, sys
from pathlib import Path
out, mode, device = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = [{"step": r[0], "exit": int(r[1]), "seconds": int(r[2])} for r in csv.reader((out / "steps.tsv").open(), delimiter="\t")]
def read(path):
    p = out / path
    return json.loads(p.read_text()) if p.is_file() else None
run = read("runs/scratch-resnet50/summary.json") or {}
test = read("runs/scratch-resnet50/metrics.json") or {}
ext = read("runs/scratch-resnet50/eval/brain-tumor-mri-external/metrics.json") or {}
summary = {"mode": mode, "device": device, "steps": steps,
           "train_seconds": run.get("total_seconds"), "test_accuracy": test.get("accuracy"),
           "external_accuracy": ext.get("accuracy"), "torchrun_finished": (out / "runs/torchrun-resnet50/summary.json").is_file()}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
sys.exit(0 if all(s["exit"] == 0 for s in steps) else 1)
PYEOF
