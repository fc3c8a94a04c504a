#!/bin/bash
# The third time-to-accuracy study as it was run (this machine's paths): each training from a
# clean worktree at the commit named, then the tables and the paired comparisons from the run
# records alone. Resumable: finished runs are kept, an interrupted one resumes.
set -e
export PYTHONPATH=/work/tta4/src
cd /work/tta4    # commit b21b9d0 (adds --fused-optimizer, the lever and the 45-epoch recipe)
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3 \
    --recipes '' --levers fused-optimizer --pairs 2
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3 \
    --recipes progressive-batch-64-fused-45-epochs --levers ''
export PYTHONPATH=/work/tta5/src
cd /work/tta5    # commit 4b1e787 (adds the 60-epoch recipe; training code as at b21b9d0)
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3 \
    --recipes progressive-batch-64-fused-60-epochs --levers ''
export PYTHONPATH=/work/tta6/src
cd /work/tta6    # commit 32319ce (adds the last recipe; training code as at b21b9d0)
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3 \
    --recipes mostly-64-px-fused-60-epochs-val-every-5 --levers ''
# the tables of every run and the lever (no training: every run has finished)
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3 \
    --recipes progressive-batch-64-fused-45-epochs,progressive-batch-64-fused-60-epochs,mostly-64-px-fused-60-epochs-val-every-5 \
    --levers fused-optimizer --pairs 2
# each new run against the second study's runs on the same split and test images (paired
# bootstrap and McNemar; the second study's runs repeat byte for byte, see its README)
/work/main/.venv/bin/python - <<'PY' > /work/exp/tta3/against_study_2.json
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
from time_to_accuracy import against
new = ["progressive-batch-64-fused-45-epochs", "progressive-batch-64-fused-60-epochs", "mostly-64-px-fused-60-epochs-val-every-5"]
refs = ["today", "progressive-batch-64"]
print(json.dumps({n: {r: against(Path("/work/exp/tta3") / n, Path("/work/exp/tta2") / r) for r in refs} for n in new}, indent=2))
PY
cd /work/main
.venv/bin/brainmri results publish /work/exp/tta3 docs/results/time-to-accuracy-3
# seed 43 of the fitted recipe on seed 42's test side, from a clean worktree at 475a13c (adds
# --seed and --split to the script; training code as at b21b9d0), then its paired comparisons
export PYTHONPATH=/work/tta7/src
cd /work/tta7
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3-seed43 \
    --recipes mostly-64-px-fused-60-epochs-val-every-5 --levers '' \
    --seed 43 --split /work/exp/tta3/mostly-64-px-fused-60-epochs-val-every-5/split.csv
/work/main/.venv/bin/python - <<'PY' > /work/exp/tta3-seed43/against.json
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
from time_to_accuracy import against
new = Path("/work/exp/tta3-seed43/mostly-64-px-fused-60-epochs-val-every-5")
refs = {"seed 42 (../mostly-64-px-fused-60-epochs-val-every-5)": Path("/work/exp/tta3/mostly-64-px-fused-60-epochs-val-every-5"),
        "today (second study)": Path("/work/exp/tta2/today"),
        "progressive batch 64 (second study)": Path("/work/exp/tta2/progressive-batch-64")}
print(json.dumps({k: against(new, v) for k, v in refs.items()}, indent=2))
PY
cd /work/main
.venv/bin/brainmri results publish /work/exp/tta3-seed43 docs/results/time-to-accuracy-3/seed-43
# seed 43 of the preset's recipe (progressive batch 64), then seed 44 of the fitted recipe and of
# the preset's recipe, all on seed 42's test side, from a clean worktree at c096e3c (training code
# as at b21b9d0); then the tables and each seed's paired comparisons
export PYTHONPATH=/work/tta8/src
cd /work/tta8
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3-seed43 \
    --recipes progressive-batch-64 --levers '' \
    --seed 43 --split /work/exp/tta3/mostly-64-px-fused-60-epochs-val-every-5/split.csv
for r in mostly-64-px-fused-60-epochs-val-every-5 progressive-batch-64; do
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3-seed44 \
    --recipes $r --levers '' \
    --seed 44 --split /work/exp/tta3/mostly-64-px-fused-60-epochs-val-every-5/split.csv
done
for s in 43 44; do
/work/main/.venv/bin/python scripts/time_to_accuracy.py --data /work/exp/depth/prepared-256 --out /work/exp/tta3-seed$s \
    --recipes mostly-64-px-fused-60-epochs-val-every-5,progressive-batch-64 --levers '' \
    --seed $s --split /work/exp/tta3/mostly-64-px-fused-60-epochs-val-every-5/split.csv
done
/work/main/.venv/bin/python - <<'PY' > /work/exp/tta3-seeds.json
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
from time_to_accuracy import against
fitted, preset = "mostly-64-px-fused-60-epochs-val-every-5", "progressive-batch-64"
runs = {42: {fitted: Path("/work/exp/tta3") / fitted, preset: Path("/work/exp/tta2") / preset},
        43: {r: Path("/work/exp/tta3-seed43") / r for r in (fitted, preset)},
        44: {r: Path("/work/exp/tta3-seed44") / r for r in (fitted, preset)}}
import numpy as np
from brainmri.metrics.paired import paired_bootstrap
from time_to_accuracy import correct_on_test
out = {f"seed {s}: fitted against the preset's recipe": against(r[fitted], r[preset]) for s, r in runs.items()}
# pooled over the three seeds: each test image's correctness averaged over the seeds, bootstrapped by duplicate group
right = {k: [correct_on_test(r[k]) for r in runs.values()] for k in (fitted, preset)}
paths = sorted(right[fitted][0])
mean = {k: np.mean([[c[p][0] for p in paths] for c in right[k]], axis=0) for k in right}
groups = [right[fitted][0][p][1] for p in paths]
out["seeds 42-44 pooled: fitted against the preset's recipe"] = paired_bootstrap(mean[fitted], mean[preset], clusters=groups)
out["test accuracy per seed"] = {k: {s: float(np.mean([c[p][0] for p in paths])) for s, c in zip(runs, right[k])} for k in right}
print(json.dumps(out, indent=2))
PY
cp /work/exp/tta3-seeds.json docs/results/time-to-accuracy-3/seeds.json
