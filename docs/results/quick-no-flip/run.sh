#!/bin/bash
# The quick preset end to end, alternating the code with flip averaging (f54e3d5) and without it
# (0512c79: "tta": false in the quick preset), each from a clean worktree, timed per piece by
# ../quick-end-of-run/driver.py (one.sh), in this order; published here as flip-N (head-N) and
# no-flip-N (notta-N).
set -e
ONE=$(cd "$(dirname "$0")" && pwd)/one.sh
git -C /work/main worktree add /work/wt-head f54e3d5
git -C /work/main worktree add /work/wt-notta 0512c79
$ONE head-1 /work/wt-head
$ONE notta-1 /work/wt-notta
$ONE head-2 /work/wt-head
$ONE notta-2 /work/wt-notta
