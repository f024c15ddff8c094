#!/usr/bin/env bash
# The main job on the embedded defaults: set up .venv/, list the registry, train the baseline
# and the paper's G1 elementwise gate at the tiny size on the built-in corpus, log both to
# MLflow in ./mlflow.db, and say where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
gatelab=.venv/bin/gatelab
"$gatelab" list
for variant in baseline g1-elementwise; do
  "$gatelab" train "$variant" --preset tiny
done
cat <<TXT

Results: MLflow store sqlite:///$(pwd)/mlflow.db, experiment "gatelab".
Open the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///$(pwd)/mlflow.db --host 127.0.0.1
Then browse http://127.0.0.1:5000 and compare the two runs.
TXT
