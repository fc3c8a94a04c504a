#!/bin/bash
# The runs of this record: the quick preset end to end from a clean worktree of 32424c3 with
# --jobs 2 and --jobs 1, alternated (j2-1, j1-1, j1-2, j2-2), into /work/exp/q29/NAME; then each
# trimmed into this folder (no checkpoints, no figures): time.txt, reproduce.log and per model its
# config, split, environment, train.log, history, summary, metrics and predictions.
set -e
here=$(cd "$(dirname "$0")" && pwd)
P=/work/main/.venv/bin/python
D=/work/shared/datasets
wt=/work/wt/jobs
[ -d $wt ] || git -C /work/main worktree add -q $wt 32424c3
for r in "j2-1 2" "j1-1 1" "j1-2 1" "j2-2 2"; do
  set -- $r; name=$1; jobs=$2; out=/work/exp/q29/$name
  rm -rf $out; mkdir -p $out
  (cd $wt && PYTHONPATH=$wt/src /usr/bin/time -v -o $out/time.txt $P -m brainmri.cli.command \
     reproduce --preset quick --data $D/brain-tumor-mri-sartaj --external $D/brain-tumor-mri-external \
     --out $out/out --no-progress --jobs $jobs > $out/log.txt 2>&1)
  rm -rf $out/out/prepared-256
  dest=$here/$name; mkdir -p $dest
  cp $out/time.txt $dest/; grep -v RuntimeWarning $out/log.txt > $dest/reproduce.log
  for model in $out/out/quick/runs/*/; do
    m=$dest/runs/$(basename $model); mkdir -p $m
    for f in config.json split.csv environment.json train.log history.csv summary.json metrics.json \
             predictions.csv val_predictions.csv; do cp $model/$f $m/; done
    for e in $model/eval/*/; do
      mkdir -p $m/eval/$(basename $e); cp $e/metrics.json $e/predictions.csv $m/eval/$(basename $e)/
    done
  done
done
$P $here/summarise.py $here
