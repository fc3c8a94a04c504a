#!/bin/bash
# The quick preset end to end, alternating the code before (85427de) and after (d673ccb) the
# end-of-run changes, each from a clean worktree, timed per piece by driver.py.
set -e
P=/work/main/.venv/bin/python
D=/work/shared/datasets
one() {  # name worktree
  local name=$1 wt=$2
  rm -rf /work/exp/qend/$name; mkdir -p /work/exp/qend/$name
  (cd $wt && PYTHONPATH=$wt/src /usr/bin/time -v -o /work/exp/qend/$name/time.txt $P /work/exp/qend/driver.py /work/exp/qend/$name/pieces.json \
     reproduce --preset quick --data $D/brain-tumor-mri-sartaj --external $D/brain-tumor-mri-external \
     --out /work/exp/qend/$name/out --no-progress > /work/exp/qend/$name/log.txt 2>&1)
  find /work/exp/qend/$name -name last.pt -delete
  rm -rf /work/exp/qend/$name/out/prepared-256
  echo "$name $(grep Elapsed /work/exp/qend/$name/time.txt)"
}
one before-1 /work/wt-before
one after-1 /work/wt-after
one before-2 /work/wt-before
one after-2 /work/wt-after
echo DONE
