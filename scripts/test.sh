#!/usr/bin/env bash
# Set up .venv/ (if needed), install headless Chromium (if missing) and run the whole test
# suite, slow end-to-end tests included, on two pytest-xdist workers (GATELAB_TEST_WORKERS=N
# for another count, 0 for one process; each test file runs on one worker: pyproject's
# --dist loadfile), then list the 25 slowest tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-chromium.sh
exec .venv/bin/python -m pytest -n "${GATELAB_TEST_WORKERS:-2}" --durations=25 "$@"
