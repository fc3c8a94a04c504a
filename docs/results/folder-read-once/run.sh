#!/bin/bash
# The runs of this folder as they were made (this machine's paths), in this order: the quick
# preset end to end from clean worktrees, timed per piece by ../quick-end-of-run/driver.py
# (../quick-no-flip/one.sh), alternating the code before (e16f16c: each model's evaluation reads
# the external folder) and after (1b2fa11: the folder is read once for the three models), then
# the records kept here (../input-check-calibration/trim.sh).
set -e
ONE=/work/main/docs/results/quick-no-flip/one.sh
TRIM=/work/main/docs/results/input-check-calibration/trim.sh
git -C /work/main worktree add /work/wt/cal2 e16f16c
git -C /work/main worktree add /work/wt/fold2 1b2fa11
for i in 1 2; do
  $ONE read-after-$i /work/wt/fold2
  $ONE read-before-$i /work/wt/cal2
done
cd /work/main/docs/results/folder-read-once
for i in 1 2; do
  $TRIM /work/exp/q27/read-before-$i before-$i
  $TRIM /work/exp/q27/read-after-$i after-$i
done
