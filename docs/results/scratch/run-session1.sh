#!/usr/bin/env bash
# The measured scratch comparison: ResNet-50/101/152 from scratch on the duplicate-aware split,
# evaluated on the external folder, then ResNet-50 again on the paper's random split (the
# leakage study). Resumable: rerun the same command.
cd /work/final
export PYTHONPATH=/work/exp2/src
/work/main/.venv/bin/brainmri reproduce --preset scratch \
    --data /work/shared/datasets/brain-tumor-mri-sartaj \
    --external /work/shared/datasets/brain-tumor-mri-external \
    --leakage --leakage-archs resnet50 \
    --out /work/final/reproduce --no-progress
