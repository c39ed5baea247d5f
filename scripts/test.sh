#!/usr/bin/env bash
# Install tabtrack with its test dependencies into .venv and run the linters and the test suite.
# Complete on a fresh machine with Python 3.11+: `bash scripts/test.sh` (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q --no-compile -e '.[dev,all]'
# Everything byte-compiled before the tests, on every core (pip compiles on one, ~2 minutes): CI machines
# set PYTHONDONTWRITEBYTECODE, so no test process writes bytecode, and each would compile all it imports.
# Left to the first import instead, a server's first requests in an early test ran slow enough to time out.
# (src/ too: an editable install leaves tabtrack's own modules uncompiled.) A file that does not compile
# (pip skips those too) is not an error here.
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages src >/dev/null || true
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
# Two workers (pytest-xdist) on the 2-core CI machine, each with one native thread (OpenMP, BLAS, torch)
# that the CLIs and servers the tests start inherit, so processes do not oversubscribe the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# worksteal: a worker that runs out of tests takes the other's last ones, so both end together.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
