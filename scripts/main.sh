#!/usr/bin/env bash
# The main job on the embedded defaults: set up .venv/, then run the `smoke` sweep (baseline and
# three gates at the tiny size on the built-in corpus) on a local Ray, logged to MLflow in
# ./mlflow.db. It ends by saying where the results are and how to open the MLflow UI.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/gatelab sweep smoke "$@"
