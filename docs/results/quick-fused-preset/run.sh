#!/bin/bash
# The quick preset end to end, alternating: the code before the shared forward pass (c096e3c, /work/tta8),
# the code with it (/work/q5), and with it plus the fused optimiser; each from a clean worktree.
set -e
P=/work/main/.venv/bin/python
D=/work/shared/datasets
one() {  # name worktree extra-args...
  local name=$1 wt=$2; shift 2
  rm -rf /work/exp/qpair/$name; mkdir -p /work/exp/qpair/$name
  (cd $wt && PYTHONPATH=$wt/src /usr/bin/time -v -o /work/exp/qpair/$name/time.txt $P -m brainmri reproduce --preset quick \
     --data $D/brain-tumor-mri-sartaj --external $D/brain-tumor-mri-external --out /work/exp/qpair/$name/out --no-progress "$@" \
     > /work/exp/qpair/$name/log.txt 2>&1)
  find /work/exp/qpair/$name -name last.pt -delete
  echo "$name $(grep Elapsed /work/exp/qpair/$name/time.txt)"
}
one before-1 /work/tta8
one shared-fused-1 /work/q5 --fused-optimizer
one shared-1 /work/q5
one before-2 /work/tta8
one shared-fused-2 /work/q5 --fused-optimizer
one shared-2 /work/q5
echo DONE
