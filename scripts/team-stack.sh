#!/usr/bin/env bash
# The team stack on 127.0.0.1: PostgreSQL (runs and the model registry), an S3-compatible object store
# (artifacts) and `mlflow server` in front of both.
#
#   bash scripts/team-stack.sh start            # proxied artifacts: only the server holds S3 credentials
#   bash scripts/team-stack.sh start --direct   # clients read and write s3:// themselves
#   bash scripts/team-stack.sh stop [--purge]   # --purge also drops the database
#
# `start` prints the `export` lines a client needs (also kept in $STACK_DIR/env). The server runs MLflow's own
# basic-auth app: every request needs a user (the admin's name and password are in the exports; add users with
# MLflow's AuthServiceClient or REST API, and give them experiments with permissions). The object store is moto's
# S3 server, an in-memory stand-in for tests and trials: in production point S3_ENDPOINT at MinIO, Ceph or
# AWS S3 and skip moto (TEAM_STACK_S3_ENDPOINT=https://…). Settings, from the environment:
#   PYTHON (python3: the one tabtrack is installed in, with the `postgres` and `s3` extras and `moto[server]`)
#   TEAM_STACK_DIR (.tabtrack/team-stack)  TEAM_STACK_PORT (5000)  TEAM_STACK_S3_PORT (9000)
#   TEAM_STACK_BUCKET (tabtrack)  TEAM_STACK_DB (tabtrack_team)
#   TEAM_STACK_POSTGRES_URL (default: what scripts/postgres.sh starts; any database the role can log in to)
#   TEAM_STACK_S3_ENDPOINT (unset: start moto)  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (moto takes any)
#   TEAM_STACK_ADMIN_PASSWORD (unset: a random one, kept in $STACK_DIR/env)  TEAM_STACK_SECRET_KEY (the same)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
STACK_DIR=${TEAM_STACK_DIR:-.tabtrack/team-stack}
PORT=${TEAM_STACK_PORT:-5000}
S3_PORT=${TEAM_STACK_S3_PORT:-9000}
BUCKET=${TEAM_STACK_BUCKET:-tabtrack}
DB=${TEAM_STACK_DB:-tabtrack_team}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-team-stack}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-team-stack-secret}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}

wait_http() {  # URL PIDFILE WHAT: poll until URL answers, fail if the process died
  for _ in $(seq 240); do
    "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null && return 0
    kill -0 "$(cat "$2")" 2>/dev/null || { echo "team-stack: $3 exited; see $STACK_DIR/$3.log" >&2; tail -20 "$STACK_DIR/$3.log" >&2; return 1; }
    sleep 0.5
  done
  echo "team-stack: $3 did not answer at $1 within 120 s" >&2; return 1
}

database() {  # create|drop: MLflow's database, its users' and Optuna's, next to the one TEAM_STACK_POSTGRES_URL names
  "$PYTHON" - "$1" "$POSTGRES_URL" "$DB" "${DB}_auth" "${DB}_optuna" <<'EOF'
import sys, sqlalchemy
action, url, *dbs = sys.argv[1:]
engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
  for db in dbs:
    exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": db}).scalar()
    if action == "create" and not exists:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{db}"'))
    elif action == "drop" and exists:
        conn.execute(sqlalchemy.text(f'DROP DATABASE "{db}" WITH (FORCE)'))
EOF
}

stop_one() {
  local pidfile="$STACK_DIR/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true   # the whole process group: mlflow's server workers too
  for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
start)
  mode=proxied; [ "${2:-}" = "--direct" ] && mode=direct
  mkdir -p "$STACK_DIR"
  POSTGRES_URL=${TEAM_STACK_POSTGRES_URL:-$(bash "$here/postgres.sh")}
  database create
  backend="${POSTGRES_URL%/*}/$DB"
  S3_ENDPOINT=${TEAM_STACK_S3_ENDPOINT:-http://127.0.0.1:$S3_PORT}
  if [ -z "${TEAM_STACK_S3_ENDPOINT:-}" ]; then
    setsid "$PYTHON" -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$STACK_DIR/s3.log" 2>&1 </dev/null &
    echo $! >"$STACK_DIR/s3.pid"
    wait_http "$S3_ENDPOINT/moto-api/" "$STACK_DIR/s3.pid" s3
  fi
  "$PYTHON" - "$S3_ENDPOINT" "$BUCKET" <<'EOF'
import sys, boto3
endpoint, bucket = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint)
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
EOF
  if [ "$mode" = proxied ]; then
    artifacts=(--artifacts-destination "s3://$BUCKET/mlflow")
  else
    artifacts=(--no-serve-artifacts --default-artifact-root "s3://$BUCKET/mlflow")
  fi
  # Users and their permissions live in a database of their own; the admin is made on first start.
  random() { "$PYTHON" -c "import secrets; print(secrets.token_urlsafe(18))"; }
  ADMIN_PASSWORD=${TEAM_STACK_ADMIN_PASSWORD:-$(random)}
  SECRET_KEY=${TEAM_STACK_SECRET_KEY:-$(random)}
  # auth_cache_ttl_seconds: MLflow checks a password (werkzeug's scrypt, ~0.13 s of CPU) once per user and minute
  # instead of on every request. MLflow leaves it off; off, the suite's every-command test took 293 s, on 81 s.
  # (A password changed through one server worker is still accepted by the other for up to a minute.)
  (
    umask 077
    printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = admin\nadmin_password = %s\n%s\n%s\n' \
      "${POSTGRES_URL%/*}/${DB}_auth" "$ADMIN_PASSWORD" \
      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
      "auth_cache_ttl_seconds = 60" >"$STACK_DIR/auth.ini"
  )
  # The server (only it, in proxied mode) talks to S3 with these credentials.
  MLFLOW_S3_ENDPOINT_URL=$S3_ENDPOINT MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_AUTH_CONFIG_PATH="$STACK_DIR/auth.ini" MLFLOW_FLASK_SERVER_SECRET_KEY=$SECRET_KEY \
    setsid "$PYTHON" -m mlflow server --app-name basic-auth --host 127.0.0.1 --port "$PORT" \
    --workers "${TEAM_STACK_WORKERS:-2}" --backend-store-uri "$backend" "${artifacts[@]}" \
    >"$STACK_DIR/mlflow.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/mlflow.pid"
  wait_http "http://127.0.0.1:$PORT/health" "$STACK_DIR/mlflow.pid" mlflow
  {
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT"
    echo "export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$ADMIN_PASSWORD"
    if [ "$mode" = direct ]; then
      echo "export MLFLOW_S3_ENDPOINT_URL=$S3_ENDPOINT"
      echo "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    fi
    echo "# data on the object store (s3:// paths for tabtrack), and the Optuna studies of tune --workers:"
    echo "export TEAM_STACK_S3_ENDPOINT_URL=$S3_ENDPOINT TEAM_STACK_BUCKET=$BUCKET"
    echo "export TEAM_STACK_STUDY_DB=${POSTGRES_URL%/*}/${DB}_optuna"
  } >"$STACK_DIR/env"
  echo "# team stack up ($mode artifacts in s3://$BUCKET/mlflow); stop it with: bash scripts/team-stack.sh stop" >&2
  cat "$STACK_DIR/env"
  ;;
stop)
  stop_one mlflow
  stop_one s3
  if [ "${2:-}" = "--purge" ]; then
    POSTGRES_URL=${TEAM_STACK_POSTGRES_URL:-$(bash "$here/postgres.sh")}
    database drop
    rm -rf "$STACK_DIR"
  fi
  ;;
*)
  echo "usage: bash scripts/team-stack.sh start [--direct] | stop [--purge]" >&2
  exit 2
  ;;
esac
