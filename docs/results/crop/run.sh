#!/bin/bash
# A training-side change (edge-cutting random crops, --crop 0.6) beside the depth grid's
# ResNet-50 seed 42, same split, same seed, scored by the same code on the boxed external slices.
set -e
cd /work/q4
export PYTHONPATH=/work/q4/src
B="/work/main/.venv/bin/python -m brainmri"
EXT=../shared/datasets/brain-tumor-mri-external
C=/work/exp/crop
[ -d $C/baseline ] || cp -r /work/exp/depth/scratch/runs/resnet50/seed42 $C/baseline
cp /work/exp/depth/scratch/external-groups-brain-tumor-mri-external.csv $C/
if [ ! -f $C/crop0.6/checkpoints/best.pt ] || [ ! -f $C/crop0.6/metrics.json ]; then
  $B train --config configs/scratch.yaml --epochs 20 --crop 0.6 --data /work/exp/depth/prepared-256 \
     --split /work/exp/depth/scratch/split.csv --seed 42 --runs-dir $C --name crop0.6 --quiet \
  || $B train --config configs/scratch.yaml --resume --runs-dir $C --name crop0.6 --quiet
fi
$B evaluate $C/crop0.6 --overwrite
$B evaluate $C/crop0.6 --data $EXT --boxes $EXT/boxes.csv --overwrite
$B evaluate $C/baseline --data $EXT --boxes $EXT/boxes.csv --overwrite
cat > $C/change.json <<J
{"baseline": "baseline", "changed": "crop0.6", "change": "random edge-cutting crops (--crop 0.6)", "external": "brain-tumor-mri-external"}
J
$B results table $C
