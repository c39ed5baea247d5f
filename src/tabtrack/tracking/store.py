"""Which MLflow store a command talks to, and the UI address for a run."""

from __future__ import annotations

import os
from pathlib import Path

from tabtrack import settings
from tabtrack.redact import redact_uri

DEFAULT_DB = "mlflow.db"
DEFAULT_UI = "http://127.0.0.1:5000"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """`--tracking-uri`, then MLFLOW_TRACKING_URI, then the embedded SQLite file in the working directory."""
    uri = explicit or os.environ.get(settings.TRACKING_URI)
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def server_reachable(uri: str) -> bool:
    """A TCP connect to an http(s) tracking server within the connect timeout; local stores always are."""
    if is_local_store(uri):
        return True
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return connect_error(parts.hostname or "localhost", port) is None


def mlflow_client(tracking_uri: str | None = None):
    """MLflow's client for `--tracking-uri` (else MLflow's own resolution, else ./mlflow.db), the registry on the same
    store; MLflow's fluent API is pointed there too."""
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def as_model_uri(text: str) -> str:
    """A model as the commands take it: `NAME@alias` and `NAME/3` are the registered models they name
    (`models:/NAME@alias`, `models:/NAME/3`); URIs and folders stay as they are."""
    import re

    if ":/" in text or Path(text).exists():
        return text
    if re.fullmatch(r"[^/@\s]+@[\w.-]+", text) or re.fullmatch(r"[^/@\s]+/\d+", text):
        return f"models:/{text}"
    return text


def registered_version(client, model_uri: str):
    """The registered version `models:/NAME@ALIAS` or `models:/NAME/N` names (MLflow's ModelVersion), or None for
    another kind of URI. Raises MlflowException where the registry holds no such model, alias or version."""
    path = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
    if not path or path.startswith("m-"):  # a logged model's own id
        return None
    name, sep, alias = path.partition("@")
    if sep:
        return client.get_model_version_by_alias(name, alias)
    name, _, number = path.partition("/")
    return client.get_model_version(name, number) if number.isdigit() else None


def connect_error(host: str, port: int) -> str | None:
    """Why nothing accepts a TCP connection at host:port within the connect timeout; None when something does."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=settings.seconds(settings.CONNECT_TIMEOUT)):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def is_local_store(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to see the run: the server itself, or `tabtrack ui`'s default address for a local store."""
    base = DEFAULT_UI if is_local_store(uri) else redact_uri(uri).rstrip("/").replace("***@", "")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def copy_model(model_uri: str | None, directory: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Copy a logged MLflow model (`models:/...`, `runs:/...`, or a local folder) into `directory`."""
    import shutil
    import tempfile

    import mlflow

    if not model_uri:
        raise ValueError("the run logged no model")
    directory = Path(directory)
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    with tempfile.TemporaryDirectory(dir=directory.parent if directory.parent.exists() else None) as tmp:
        if Path(model_uri).is_dir():  # an offline run's model: already on disk
            local = Path(tmp) / "model"
            shutil.copytree(model_uri, local)
        else:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        if directory.exists():
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(local), directory)
    return directory
