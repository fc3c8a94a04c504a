#!/usr/bin/env bash
# Recipe ablation for training ResNet-50 from scratch: every run on the same split, whose
# "test" side is a validation side carved from the training side (split-ablation.csv); the
# real test side is not in it. Resumable: rerun the same command.
set -u
cd /work/runs
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1
B=/work/main/.venv/bin/brainmri
COMMON="--data prepared-256 --split split-ablation.csv --arch resnet50 --weights none --image-size 128 --val-every 4 --runs-dir ablation --quiet"
ONE="--optimizer adamw --weight-decay 0.05 --schedule onecycle --lr 2e-3 --warmup 0.2"
run() {  # name, flags...
    local name=$1; shift
    if [ -f ablation/$name/summary.json ]; then echo "$name done"; return; fi
    if [ -f ablation/$name/checkpoints/last.pt ]; then
        $B train $COMMON --name $name --resume
    else
        $B train $COMMON --name $name --overwrite "$@"
    fi
    echo "$name exit $?"
}
wait_for() { while kill -0 "$1" 2>/dev/null; do sleep 20; done; }
case $1 in
  q1)
    wait_for 5533
    run a1-adamw-onecycle --epochs 20 $ONE
    run a6-zero-init --epochs 20 $ONE --label-smoothing 0.1 --hflip --ema 0.998 --zero-init-residual
    run a3-hflip --epochs 20 $ONE --label-smoothing 0.1 --hflip
    ;;
  q2)
    wait_for 5537
    run a0-paper --epochs 20
    run a5-ema --epochs 20 $ONE --label-smoothing 0.1 --hflip --ema 0.998
    run a2-label-smoothing --epochs 20 $ONE --label-smoothing 0.1
    ;;
esac
