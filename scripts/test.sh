#!/usr/bin/env bash
# Set up .venv/ (if needed), install headless Chromium (if missing) and run the whole test
# suite, slow end-to-end tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-chromium.sh
exec .venv/bin/python -m pytest "$@"
