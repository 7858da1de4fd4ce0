#!/usr/bin/env bash
# Create .venv and install the pinned stack (idempotent). Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and exactly pinned: the CPU wheel on this machine's disk; anything looser
# makes pip fetch a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements/lock.txt
python -m pip install -q --no-deps -e .
python -m pip check
