#!/usr/bin/env bash
# Start the local PostgreSQL cluster (Debian's `postgresql` package) and create the role and database
# the tests use; prints the URL (and nothing else) on stdout. Idempotent. Needs root (or sudo) to start the cluster.
set -euo pipefail
exec 3>&1 1>&2   # everything below talks to stderr (pg_ctlcluster prints notices); only the URL goes to stdout
as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else sudo -u postgres bash -c "$1"; fi; }
read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
if ! pg_isready -q -h 127.0.0.1; then
  # 3>&-: the server daemon must not inherit fd 3, or a caller's `$(...)` waits on it forever.
  if [ "$(id -u)" -eq 0 ]; then pg_ctlcluster "$version" "$cluster" start 3>&- </dev/null
  else sudo pg_ctlcluster "$version" "$cluster" start 3>&- </dev/null; fi
fi
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
as_postgres "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='tabtrack'\"" | grep -q 1 \
  || as_postgres "psql -qc \"CREATE ROLE tabtrack LOGIN PASSWORD 'tabtrack'\""
# CREATEDB: tests give each mlflow server its own fresh database.
as_postgres "psql -qc \"ALTER ROLE tabtrack CREATEDB\""
as_postgres "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='tabtrack_test'\"" | grep -q 1 \
  || as_postgres "createdb -O tabtrack tabtrack_test"
echo "postgresql://tabtrack:tabtrack@127.0.0.1:5432/tabtrack_test" >&3
