# Sourced by the GPU scripts (gpu_check.sh, gpu_grid.sh) from the repository root, with OUT set
# to the output folder: makes OUT absolute; sets PY, DATA, EXTERNAL (env, or the shared
# datasets), installs the wheels carried in .whl/ (to a machine that cannot reach a registry)
# into /tmp/site, puts it and src/ on PYTHONPATH, and sets MODE (auto -> full with a GPU,
# reduced without) and DEVICE (cuda or cpu).
NAME=$(basename "$0" .sh)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DATA=${DATA:-../shared/datasets/brain-tumor-mri-sartaj}
EXTERNAL=${EXTERNAL:-../shared/datasets/brain-tumor-mri-external}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "$NAME: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))") || { echo "$NAME: no torch" >&2; exit 2; }
MODE=${MODE:-auto}
if [ "$MODE" = auto ]; then MODE=$([ "$CUDA" = 1 ] && echo full || echo reduced); fi
DEVICE=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)
