#!/bin/bash
# trim.sh RUN DEST: the records of one quick-preset run kept here (no checkpoints, no figures):
# time.txt, pieces.json, reproduce.log (the run's log.txt), the external folder's near-duplicate
# groups, and per model its config, split, environment (the commit), train.log, history,
# summary, metrics and predictions of the test side, the validation side and the external folder.
set -e
run=$1; dest=$2
mkdir -p $dest
cp $run/time.txt $run/pieces.json $dest/
cp $run/log.txt $dest/reproduce.log
cp $run/out/quick/external-groups-*.csv $dest/
for model in $run/out/quick/runs/*/; do
  m=$dest/runs/$(basename $model)
  mkdir -p $m
  for f in config.json split.csv environment.json train.log history.csv summary.json metrics.json \
           predictions.csv val_predictions.csv; do cp $model/$f $m/; done
  for e in $model/eval/*/; do
    mkdir -p $m/eval/$(basename $e)
    cp $e/metrics.json $e/predictions.csv $m/eval/$(basename $e)/
  done
done
