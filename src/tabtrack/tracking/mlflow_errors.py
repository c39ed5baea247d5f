"""How MLflow's failures read for tabtrack: a server that cannot be reached (the run goes offline), a SQLite store
another process holds locked (wait and retry), and a refusal, worded for the user."""

from __future__ import annotations

import time

from mlflow.exceptions import MlflowException

from tabtrack.errors import TrackingError

# SQLite lets one writer in at a time; concurrent `tabtrack train` processes wait their turn.
LOCKED_RETRIES, LOCKED_BACKOFF_S = 8, 0.25


def unreachable(exc: BaseException) -> bool:
    """True for a tracking server that cannot be connected to (as opposed to one that refuses a request, or
    one that is slow to answer: a read time-out while a large upload is stored is not an outage, and going
    offline then would upload the model twice). A TrackingError raised from such a failure counts too."""
    import requests

    if isinstance(exc, TrackingError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    if isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in text or "ReadTimeoutError" in text:
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
        return True
    return isinstance(exc, MlflowException) and any(
        marker in text
        for marker in ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
                       "RemoteDisconnected", "Connection aborted")
    )  # fmt: skip


def _locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc)


def _raced(exc: BaseException) -> bool:
    """Two runs logging the same dataset at once: MLflow looks the dataset up, then inserts it, so the slower
    insert breaks the unique key (SQLite and PostgreSQL word it differently); the retry finds the row."""
    text = str(exc)
    return "datasets" in text and ("UNIQUE constraint failed" in text or "duplicate key value" in text)


def retry_locked(call, *args, **kwargs):
    """`call` again with backoff while SQLite reports a lock, or a concurrent insert of the same dataset won
    the race; the failed transaction wrote nothing."""
    for attempt in range(LOCKED_RETRIES):
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            if not (_locked(exc) or _raced(exc)) or attempt == LOCKED_RETRIES - 1:
                raise
            time.sleep(LOCKED_BACKOFF_S * 2**attempt)
    return None


def refusal(exc: MlflowException) -> str:
    """MLflow's message on one line; auth failures say which settings to check."""
    text = " ".join(str(exc.message).split())
    if exc.error_code == "PERMISSION_DENIED" or "error code 403" in text:
        return (
            "the user lacks permission for this (HTTP 403); ask the server's admin for EDIT permission on the "
            "experiment, or record into another one (--experiment)"
        )
    if exc.error_code == "UNAUTHENTICATED" or "error code 401" in text:
        return "the server rejected the credentials (HTTP 401); check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return text[:500]
