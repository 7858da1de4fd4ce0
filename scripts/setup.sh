#!/usr/bin/env bash
# Create .venv and install the pinned stack (idempotent). Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# WordNet 3.0 for PWWS (Debian packages; needs root). Skipped with a note otherwise:
# 'suite doctor' then reports wordnet missing.
# Headless Chromium + chromedriver for the leaderboard browser test (Debian packages).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash scripts/install_wordnet.sh
  bash scripts/install_browser.sh
else
  echo "note: not root; run 'sudo bash scripts/install_wordnet.sh' for PWWS (WordNet) and" \
       "'sudo bash scripts/install_browser.sh' for the leaderboard browser test" >&2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and exactly pinned: the CPU wheel on this machine's disk; anything looser
# makes pip fetch a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements/lock.txt
python -m pip install -q --no-deps -e .
python -m pip check
