#!/usr/bin/env bash
# Finish the two ablation runs a later session interrupted (resume from last.pt), one at a time.
set -u
cd /work/runs
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1
B=/work/main/.venv/bin/brainmri
COMMON="--data prepared-256 --split split-ablation.csv --arch resnet50 --weights none --image-size 128 --val-every 4 --runs-dir ablation --quiet"
for name in a2-label-smoothing a3-hflip; do
    [ -f ablation/$name/summary.json ] || $B train $COMMON --name $name --resume
    echo "$name exit $?"
done
