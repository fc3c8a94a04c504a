#!/usr/bin/env bash
# Session 2 of the measured scratch comparison. ResNet-50 and -101 at the preset's 40 epochs
# with the ResNet-50 leakage study (resumes the first session's runs); ResNet-152 then at 20
# epochs, because 40 epochs (about 95 min) cannot finish in what is left of this session.
cd /work/final
export PYTHONPATH=/work/exp2/src
B=/work/main/.venv/bin/brainmri
$B reproduce --preset scratch --archs resnet50,resnet101 \
    --data /work/shared/datasets/brain-tumor-mri-sartaj \
    --external /work/shared/datasets/brain-tumor-mri-external \
    --leakage --leakage-archs resnet50 \
    --out /work/final/reproduce --no-progress
$B reproduce --preset scratch --archs resnet152 --epochs 20 \
    --data /work/shared/datasets/brain-tumor-mri-sartaj \
    --external /work/shared/datasets/brain-tumor-mri-external \
    --out /work/final/reproduce-r152-20ep --no-progress
