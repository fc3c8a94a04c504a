#!/usr/bin/env bash
# The depth grid and the leakage study at the scratch preset's full 40 epochs, for a GPU:
#   brainmri reproduce --preset scratch --seeds 3 --leakage --leakage-seeds 3, with the external
#   folder, then `brainmri results publish` of its records (no checkpoints) into OUT/results.
# Resumable: run it again after an interruption and it skips what finished. Without a GPU it
# runs a reduced mode on the CPU (two small ResNets, tiny images, one epoch, two seeds), which
# tests/test_gpu_script.py runs, so that the script stays runnable where no GPU is. Wheels in
# .whl/ are installed first (scripts/gpu_setup.sh).
#
#   scripts/gpu_grid.sh [OUT]        env: DATA, EXTERNAL (datasets), MODE=auto|full|reduced, PYTHON, EPOCHS
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-grid}
source scripts/gpu_setup.sh
if [ "$MODE" = full ]; then
    GRID=(--preset scratch --epochs "${EPOCHS:-40}" --seeds 3 --leakage --leakage-seeds 3)
else
    GRID=(--preset quick --archs resnet18,resnet34 --epochs 1 --image-size 32 --limit-per-class 8 --batch-size 8
          --seeds 2 --leakage --leakage-seeds 2 --bootstrap 50)
fi
echo "gpu_grid: mode $MODE, device $DEVICE" | tee "$OUT/grid.log"
"$PY" -m brainmri reproduce "${GRID[@]}" --device "$DEVICE" --data "$DATA" --external "$EXTERNAL" \
    --out "$OUT/work" --no-progress 2>&1 | tee -a "$OUT/grid.log"
PRESET=${GRID[1]}
"$PY" -m brainmri results publish "$OUT/work/$PRESET" "$OUT/results/depth" --overwrite
"$PY" -m brainmri results publish "$OUT/work/$PRESET-leakage" "$OUT/results/leakage" --overwrite
cp "$OUT/grid.log" "$OUT/results/"
echo "gpu_grid: records in $OUT/results"
