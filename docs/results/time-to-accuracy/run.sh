#!/bin/bash
# The time-to-accuracy study as it was run (this machine's paths): the runs from a clean tree at
# commit 0ef9122 (a worktree, /work/tta), then the tables from the run records by the script of
# the commit named in README.md. Resumable: finished runs are kept, an interrupted one resumes.
# (batch-64 and 20-epochs were left out for time.)
cd /work/tta
export PYTHONPATH=/work/tta/src
P="/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta"
$P --recipes today,progressive,progressive-30-epochs,30-epochs --levers ''
$P --recipes today --levers no-channels-last,workers-2 --pairs 2
# the tables (no training: every run has finished)
cd /work/main
.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta \
    --recipes today,progressive,progressive-30-epochs,30-epochs --levers no-channels-last,workers-2 --pairs 2
.venv/bin/brainmri results publish /work/exp/tta docs/results/time-to-accuracy
