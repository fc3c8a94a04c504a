#!/bin/bash
# The second time-to-accuracy study as it was run (this machine's paths): the runs from clean
# trees (worktrees) at the commits named in README.md, then the tables from the run records by
# the script of the commit named there. Resumable: finished runs are kept, an interrupted one resumes.
export PYTHONPATH=/work/tta2/src
cd /work/tta2    # commit 3a89212
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta2 \
    --recipes today,batch-64,progressive-160-px --levers ''
export PYTHONPATH=/work/tta3/src
cd /work/tta3    # commit 6a15958 (adds the recipe; training code as at 3a89212 but for the spelling of --progressive none)
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta2 \
    --recipes progressive-batch-64 --levers ''
# the tables (no training: every run has finished)
unset PYTHONPATH
cd /work/main
.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta2 \
    --recipes today,batch-64,progressive-batch-64,progressive-160-px --levers ''
.venv/bin/brainmri results publish /work/exp/tta2 docs/results/time-to-accuracy-2
