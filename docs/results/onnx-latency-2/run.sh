#!/bin/bash
# The runs of this record: scripts/onnx_latency.py (of the commit after) with the brainmri of the
# commit before (a393e8f, the uint8-to-float conversion in PyTorch) and after (e18807a, in NumPy)
# on the path, alternated, two pairs; then `brainmri predict --backend onnx` with both over the
# external folder with a quick-preset ResNet-50, whose outputs must agree byte for byte.
# Usage: run.sh RUN_FOLDER_OF_A_QUICK_RESNET50 OUT
set -e
P=/work/main/.venv/bin/python
run=$1; out=$2
mkdir -p $out
for c in a393e8f e18807a; do
  [ -d /work/wt/$c ] || git -C /work/main worktree add -q /work/wt/$c $c
done
for pair in 1 2; do
  order="a393e8f e18807a"; [ $pair = 2 ] && order="e18807a a393e8f"
  for c in $order; do
    name=$([ $c = a393e8f ] && echo before || echo after)-$pair
    (cd /work/wt/e18807a && PYTHONPATH=/work/wt/$c/src $P scripts/onnx_latency.py --out $out/$name > $out/$name.log 2>&1)
    grep -h "Through" $out/$name/onnx_latency.md | sed "s/^/$name: /" | cut -c1-60
  done
done
for c in a393e8f e18807a; do
  name=$([ $c = a393e8f ] && echo before || echo after)
  (cd /work/wt/$c && PYTHONPATH=/work/wt/$c/src /usr/bin/time -f "%e s" $P -m brainmri.cli.command predict $run \
     /work/shared/datasets/brain-tumor-mri-external --backend onnx --quiet -o $out/predict-$name.csv > /dev/null 2> $out/predict-$name.time) || true
done
cmp $out/predict-before.csv $out/predict-after.csv && echo "predictions identical"
# Then, alternated, batch-32 throughput through the Predictor (batch.txt):
for c in a393e8f e18807a e18807a a393e8f; do
  PYTHONPATH=/work/wt/$c/src $P $(dirname $0)/batch_throughput.py $c 2>&1 | grep batch
done
