"""Which MLflow store a command talks to, and the UI address for a run."""

from __future__ import annotations

import os
from pathlib import Path

from tabtrack.redact import redact_uri

DEFAULT_DB = "mlflow.db"
DEFAULT_UI = "http://127.0.0.1:5000"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """`--tracking-uri`, then MLFLOW_TRACKING_URI, then the embedded SQLite file in the working directory."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def is_local_store(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to see the run: the server itself, or `tabtrack ui`'s default address for a local store."""
    base = DEFAULT_UI if is_local_store(uri) else redact_uri(uri).rstrip("/").replace("***@", "")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
