#!/usr/bin/env bash
# Train all three models, one tracked run each, then list them. Extra arguments go to every train.py.
set -euo pipefail
cd "$(dirname "$0")"
python train.py --model rf "$@"
python train.py --model xgboost --learning-rate 0.1 "$@"
python train.py --model nn --epochs 40 --batch-size 64 --learning-rate 1e-3 "$@"
tabtrack runs list --experiment breast-cancer-own-code
