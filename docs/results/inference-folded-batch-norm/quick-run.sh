#!/bin/bash
# The quick preset end to end with BatchNorm kept (0512c79) and folded (2a9dbb0), one after the
# other, each from a clean worktree, timed per piece by ../quick-end-of-run/driver.py
# (one.sh as in ../quick-no-flip/run.sh); published here as quick-nofold-1 and quick-fold-1.
set -e
git -C /work/main worktree add /work/wt-notta 0512c79
git -C /work/main worktree add /work/wt-fold 2a9dbb0
cd /work/exp/q27
./one.sh nofold-1 /work/wt-notta
./one.sh fold-1 /work/wt-fold
