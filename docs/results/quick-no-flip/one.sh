#!/bin/bash
# one.sh NAME WORKTREE: the quick preset end to end from the clean worktree WORKTREE, timed per
# piece by ../quick-end-of-run/driver.py, into /work/exp/q27/NAME (time.txt, pieces.json, log.txt,
# out/); checkpoints and the prepared images are deleted afterwards. The runs of this folder and
# of ../inference-folded-batch-norm/quick-run.sh.
set -e
P=/work/main/.venv/bin/python
D=/work/shared/datasets
DRIVER=$(cd "$(dirname "$0")/../quick-end-of-run" && pwd)/driver.py
name=$1; wt=$2; out=/work/exp/q27/$name
rm -rf $out; mkdir -p $out
(cd $wt && PYTHONPATH=$wt/src /usr/bin/time -v -o $out/time.txt $P $DRIVER $out/pieces.json \
   reproduce --preset quick --data $D/brain-tumor-mri-sartaj --external $D/brain-tumor-mri-external \
   --out $out/out --no-progress > $out/log.txt 2>&1)
find $out -name last.pt -delete
rm -rf $out/out/prepared-256
echo "$name $(grep Elapsed $out/time.txt)"
