#!/bin/bash
# The runs of this folder as they were made (this machine's paths), in this order: the quick
# preset end to end from clean worktrees, timed per piece by ../quick-end-of-run/driver.py
# (../quick-no-flip/one.sh; before-1 by a copy of it writing into /work/exp/q28), then the
# calibration alone (time_calibration.py on the inputs features.py took from after-2's models),
# then the records kept here (trim.sh).
set -e
ONE=/work/main/docs/results/quick-no-flip/one.sh
HERE=/work/main/docs/results/input-check-calibration
git -C /work/main worktree add /work/wt/head 50554cd   # before: the calibration as it was
git -C /work/main worktree add /work/wt/cal 610c0ca    # one-batch: faster fits, one batch of image statistics remembered
git -C /work/main worktree add /work/wt/cal2 e16f16c   # after: faster fits, eight batches remembered
$ONE head-1 /work/wt/head                              # before-1 (into /work/exp/q28/head-1)
$ONE cal-after-1 /work/wt/cal                          # one-batch-1
$ONE cal-before-1 /work/wt/head                        # before-2
$ONE cal-after-2 /work/wt/cal2                         # after-1
$ONE cal-before-2 /work/wt/head                        # before-3
$ONE cal-after-3 /work/wt/cal2                         # after-2
# the prepared folder the runs used (deleted after each run), to read the training side again
/work/main/.venv/bin/brainmri data prepare /work/shared/datasets/brain-tumor-mri-sartaj /work/exp/cal/prepared-256 --size 256
PYTHONPATH=/work/wt/cal2/src /work/main/.venv/bin/python $HERE/features.py /work/exp/q27/cal-after-3/out/quick/runs \
    /work/exp/cal/prepared-256 /work/shared/datasets/brain-tumor-mri-external /work/exp/cal/inputs
for i in 1 2 3; do
  PYTHONPATH=/work/wt/head/src /work/main/.venv/bin/python $HERE/time_calibration.py /work/exp/cal/inputs before
  PYTHONPATH=/work/wt/cal2/src /work/main/.venv/bin/python $HERE/time_calibration.py /work/exp/cal/inputs after
done > $HERE/timings.jsonl
cd $HERE
./trim.sh /work/exp/q28/head-1 before-1
./trim.sh /work/exp/q27/cal-after-1 one-batch-1
./trim.sh /work/exp/q27/cal-before-1 before-2
./trim.sh /work/exp/q27/cal-after-2 after-1
./trim.sh /work/exp/q27/cal-before-2 before-3
./trim.sh /work/exp/q27/cal-after-3 after-2
