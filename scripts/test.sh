#!/usr/bin/env bash
# The test command (README, .ci/run and tox.ini all run exactly this): the layers contract
# (import-linter, pyproject.toml), the test suite, then the reproduction check
# (suite/checks/ci.yaml). Any of them failing fails. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Use the project's .venv unless a virtual environment (e.g. tox's) is already active.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then . .venv/bin/activate; fi
lint-imports --no-cache
python -m pytest -q -rs "$@"
suite check --set ci
