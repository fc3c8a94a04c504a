#!/bin/bash
# The quick preset end to end with BatchNorm kept (0512c79) and folded (2a9dbb0), one after the
# other, each from a clean worktree, timed per piece by ../quick-end-of-run/driver.py
# (../quick-no-flip/one.sh); published here as quick-nofold-1 and quick-fold-1.
set -e
ONE=$(cd "$(dirname "$0")/../quick-no-flip" && pwd)/one.sh
git -C /work/main worktree add /work/wt-notta 0512c79
git -C /work/main worktree add /work/wt-fold 2a9dbb0
$ONE nofold-1 /work/wt-notta
$ONE fold-1 /work/wt-fold
