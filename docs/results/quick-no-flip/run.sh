#!/bin/bash
# The quick preset end to end, alternating the code with flip averaging (f54e3d5) and without it
# (0512c79: "tta": false in the quick preset), each from a clean worktree, timed per piece by
# ../quick-end-of-run/driver.py, in this order; published here as flip-N (head-N) and no-flip-N (notta-N).
set -e
P=/work/main/.venv/bin/python
D=/work/shared/datasets
one() {  # name worktree
  local name=$1 wt=$2
  rm -rf /work/exp/q27/$name; mkdir -p /work/exp/q27/$name
  (cd $wt && PYTHONPATH=$wt/src /usr/bin/time -v -o /work/exp/q27/$name/time.txt $P /work/exp/q27/driver.py /work/exp/q27/$name/pieces.json \
     reproduce --preset quick --data $D/brain-tumor-mri-sartaj --external $D/brain-tumor-mri-external \
     --out /work/exp/q27/$name/out --no-progress > /work/exp/q27/$name/log.txt 2>&1)
  find /work/exp/q27/$name -name last.pt -delete
  rm -rf /work/exp/q27/$name/out/prepared-256
  echo "$name $(grep Elapsed /work/exp/q27/$name/time.txt)"
}
git -C /work/main worktree add /work/wt-head f54e3d5
git -C /work/main worktree add /work/wt-notta 0512c79
one head-1 /work/wt-head
one notta-1 /work/wt-notta
one head-2 /work/wt-head
one notta-2 /work/wt-notta
