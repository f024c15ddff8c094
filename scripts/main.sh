#!/usr/bin/env bash
# The main job on the embedded defaults: set up .venv/, run the `smoke` sweep (baseline and
# three gates at the tiny size on the built-in corpus) on a local Ray, logged to MLflow in
# ./mlflow.db, then write its report (tables beside the paper's, verdicts, plots, one HTML
# file) to out/reports/smoke/. Arguments go to `gatelab sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
status=0
.venv/bin/gatelab sweep smoke "$@" || status=$?
if [ "$status" -le 1 ]; then  # 1: a run failed; the others are still worth a report
  .venv/bin/gatelab report smoke || status=$?
fi
exit "$status"
