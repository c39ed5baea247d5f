#!/usr/bin/env bash
# Install tabtrack with its test dependencies into .venv and run the linters and the test suite.
# Complete on a fresh machine with Python 3.11+: `bash scripts/test.sh` (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Byte-compiled at install (pip's default, ~2 of the ~4 minutes): with PYTHONDONTWRITEBYTECODE set, as on
# CI machines, an install without it recompiled every import of every test process (suite 30% slower).
.venv/bin/python -m pip install -q -e '.[dev,all]'
# An editable install leaves tabtrack's own modules uncompiled, and with PYTHONDONTWRITEBYTECODE no process
# writes them: compiled once here, each of the hundreds of tabtrack processes the tests start saves ~0.8 s.
.venv/bin/python -m compileall -q src >/dev/null
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
# Two workers (pytest-xdist) on the 2-core CI machine, each with one native thread (OpenMP, BLAS, torch)
# that the CLIs and servers the tests start inherit, so processes do not oversubscribe the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# worksteal: a worker that runs out of tests takes the other's last ones, so both end together.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
