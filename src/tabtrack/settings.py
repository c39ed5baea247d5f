"""Every environment variable tabtrack reads or sets, by name, and how a number of seconds is read from one.

Grouped by who owns the variable: tabtrack's own settings, what tabtrack hands to a process it starts, and the
variables of other tools (MLflow, DVC, Ray, AWS) that it reads or gives a default.
"""

from __future__ import annotations

import os

# -- tabtrack's own settings ------------------------------------------------------------------------------------
# Seconds a tracking server (or a Ray address) gets to accept a TCP connection before the run goes offline.
CONNECT_TIMEOUT = ("TABTRACK_CONNECT_TIMEOUT", 3.0)
# A model upload still running after this many seconds is reported, and again every as many seconds.
UPLOAD_NOTICE = ("TABTRACK_UPLOAD_NOTICE", 10.0)
# Seconds a forked child (saving a model, SHAP values) may take before it is killed and its work done in-process.
FORK_TIMEOUT = ("TABTRACK_FORK_TIMEOUT", 120.0)

# The bearer token `tabtrack serve` requires of every request but /health (`--token-file` instead of this).
SERVE_TOKEN = "TABTRACK_SERVE_TOKEN"

# -- set by tabtrack for processes it starts ---------------------------------------------------------------------
# `tabtrack reproduce` gives the script it re-runs the id of the run being reproduced.
REPRODUCES = "TABTRACK_REPRODUCES"
# `tabtrack retrain` gives the script it re-runs on new data the id of the champion's run.
RETRAINS = "TABTRACK_RETRAINS"
# `tabtrack serve --workers N` tells each worker process which model to load, and where its prediction log goes.
SERVE_MODEL_URI = "TABTRACK_SERVE_MODEL_URI"
SERVE_LOG = "TABTRACK_SERVE_LOG"
SERVE_LOG_SAMPLE = "TABTRACK_SERVE_LOG_SAMPLE"
SERVE_SHADOW = "TABTRACK_SERVE_SHADOW"
SERVE_CANARY = "TABTRACK_SERVE_CANARY"
SERVE_RUNTIME = "TABTRACK_SERVE_RUNTIME"
SERVE_CONVERTED = "TABTRACK_SERVE_CONVERTED"  # where the first process keeps models it converted to ONNX

# -- other tools' variables ---------------------------------------------------------------------------------------
# GitHub Actions' job summary file: `tabtrack ci` appends its comparison there.
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
TRACKING_URI = "MLFLOW_TRACKING_URI"
TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"  # the user a tracking server with basic auth knows
DVC_EXPERIMENT = "DVC_EXP_NAME"  # set by `dvc exp run`
RAY_ADDRESS = "RAY_ADDRESS"
# Where an s3:// data file is read from (MinIO, moto, Ceph): AWS's own variables first, then MLflow's.
S3_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
# What a Ray task on another node needs from the driver's environment: the tracking server, its credentials,
# the object store's, and tabtrack's own settings.
FORWARDED_PREFIXES = ("MLFLOW_", "AWS_", "TABTRACK_")
# Native thread pools a task's model may use (its CPUs): OpenMP, BLAS, and the libraries that read their own.
THREAD_COUNTS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# MLflow's own HTTP retry (backoff 2, 7 retries) waits minutes on a dead server before reporting it; these
# defaults report it in about 7 s, and the run carries on offline. Users can still override them.
# (MLFLOW_HTTP_REQUEST_TIMEOUT keeps MLflow's 120 s: a proxied upload answers only once the object store has the file.)
MLFLOW_HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# What tabtrack's commands set before MLflow is imported, unless the user set them:
MLFLOW_CLI_DEFAULTS = {
    # MLflow prints "View run ... at <tracking URI>" to stdout, a URI password included; tabtrack prints its own link.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # MLflow's usage telemetry runs a background thread from `import mlflow` on. tabtrack's commands keep it off:
    # a process with a second thread may not fork (tabtrack/forked.py), and a closed network only makes it wait.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# ... and, without --verbose, these too:
MLFLOW_QUIET_DEFAULTS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_LOGGING_LEVEL": "WARNING"}
# `tabtrack ui`: MLflow 3's server also starts seven job-runner processes (GenAI jobs) that browsing never uses.
MLFLOW_UI_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def seconds(setting: tuple[str, float]) -> float:
    """A positive number of seconds from the setting's environment variable, else its default."""
    from tabtrack.errors import ConfigError

    name, default = setting
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}.") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}.")
    return value


def user() -> str | None:
    """Who is acting, as far as MLflow knows: the tracking server's user, else this machine's."""
    import getpass

    try:
        return os.environ.get(TRACKING_USERNAME) or getpass.getuser()
    except (KeyError, OSError):  # no such user in a container's passwd
        return None


def defaults(values: dict[str, str]) -> None:
    """Set each variable the user has not set."""
    for name, value in values.items():
        os.environ.setdefault(name, value)
