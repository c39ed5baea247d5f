#!/usr/bin/env bash
# Install tabtrack into .venv and train on bundled example data into the embedded store (./mlflow.db).
# Complete on a fresh machine with Python 3.11+: `bash scripts/demo.sh`
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export PATH="$PWD/.venv/bin:$PATH"

echo "== binary classification: breast cancer, random forest, 5-fold CV"
tabtrack train examples/breast_cancer.csv --target target --cv 5 --tag stage=demo
echo
echo "== regression: diabetes, histogram gradient boosting from a YAML config"
tabtrack train --config examples/diabetes.yaml
echo
echo "Runs are in ./mlflow.db (artifacts in ./mlruns). Browse them with: .venv/bin/tabtrack ui"
