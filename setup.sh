#!/usr/bin/env bash
# One-command set-up on a fresh machine: a virtual environment in .venv with brainmri,
# its development tools, and (for the browser test) Debian's Chromium.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision first, at the versions this project is tested with; the project's
# own ranges admit them, so pip keeps them.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev]"
# Headless Chromium for the web app's end-to-end test (skipped where it cannot be had).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
echo "setup: done. Activate with: source .venv/bin/activate"
