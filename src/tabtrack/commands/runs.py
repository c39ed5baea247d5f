"""Runs as data: list/export with MLflow's search, diff two runs, clean failed and stale runs."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import pandas as pd

from tabtrack.errors import TabtrackError
from tabtrack.lineage import process_alive
from tabtrack.pages.markdown import markdown_table
from tabtrack.tracking.store import mlflow_client

KEY_TAGS = ("git.commit", "git.dirty", "data.sha256", "data.dvc_md5", "mlflow.parentRunId")
LINEAGE = (
    "data.path",
    "data.sha256",
    "data.dvc_md5",
    "git.commit",
    "git.branch",
    "git.dirty",
    "env.python",
    "env.os",
    "tabtrack.version",
)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _experiment_ids(client, experiment: str | None) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments()))
        raise TabtrackError(f"no experiment {experiment!r}; experiments: {names or 'none yet'}.")
    return [found.experiment_id]


def list_runs(
    *,
    experiment: str | None,
    filter_string: str = "",
    order_by: list[str] | None = None,
    include_folds: bool = False,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """One row per run: id, name, status, start, params, metrics and the key lineage tags as columns."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    ids = _experiment_ids(client, experiment)
    try:
        runs = client.search_runs(
            ids, filter_string=filter_string, order_by=order_by or ["attributes.start_time DESC"], max_results=50_000
        )
    except MlflowException as exc:
        raise TabtrackError(f"MLflow rejected the search: {exc.message}") from exc
    rows = []
    for run in runs:
        if not include_folds and "fold" in run.data.params:
            continue
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms").isoformat(timespec="seconds"),
        }
        row.update({f"params.{k}": v for k, v in sorted(run.data.params.items())})
        row.update({f"metrics.{k}": v for k, v in sorted(run.data.metrics.items())})
        row.update({f"tags.{k}": run.data.tags[k] for k in KEY_TAGS if k in run.data.tags})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "status", "start_time"])
    fixed = ["run_id", "run_name", "status", "start_time"]
    ordered = (
        fixed
        + sorted(c for c in frame.columns if c.startswith("metrics."))
        + sorted(c for c in frame.columns if c.startswith("params."))
        + sorted(c for c in frame.columns if c.startswith("tags."))
    )
    return frame[ordered]


PREFERRED_METRICS = ("test_accuracy", "test_f1", "test_f1_macro", "test_roc_auc", "test_rmse", "test_mae", "test_r2")


def compact(frame: pd.DataFrame, max_metrics: int = 5) -> pd.DataFrame:
    """What fits a terminal: short ids, name, status, start, model and a few headline test metrics."""
    if frame.empty:
        return frame
    metrics = [f"metrics.{m}" for m in PREFERRED_METRICS if f"metrics.{m}" in frame.columns][:max_metrics]
    columns = [
        "run_id",
        "run_name",
        "status",
        "start_time",
        *(["params.model_type"] if "params.model_type" in frame else []),
        *metrics,
    ]
    shown = frame[columns].copy()
    shown["run_id"] = shown["run_id"].str[:12]
    return shown.rename(columns=lambda c: c.split(".", 1)[1] if "." in c else c)


def export(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n"
    if fmt == "md":
        return markdown_table(frame)
    raise TabtrackError(f"unknown format {fmt!r}; use table, csv, md or json.")


def diff(run_a: str, run_b: str, *, tracking_uri: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Params, metrics (with b - a), lineage and package versions side by side; `changed` marks differences."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    runs = []
    for run_id in (run_a, run_b):
        try:
            runs.append(client.get_run(run_id))
        except MlflowException as exc:
            raise TabtrackError(f"run {run_id!r} not found; check the id (tabtrack runs list shows them).") from exc
    a, b = runs

    def side_by_side(left: dict, right: dict) -> list[dict[str, Any]]:
        return [
            {"name": k, "a": left.get(k), "b": right.get(k), "changed": left.get(k) != right.get(k)}
            for k in sorted(set(left) | set(right))
        ]

    metrics = side_by_side(a.data.metrics, b.data.metrics)
    for row in metrics:
        both = row["a"] is not None and row["b"] is not None
        row["delta"] = row["b"] - row["a"] if both else None
    lineage_a = {k: a.data.tags.get(k) for k in LINEAGE}
    lineage_b = {k: b.data.tags.get(k) for k in LINEAGE}
    return {
        "runs": [{"name": "run_id", "a": run_a, "b": run_b, "changed": True}],
        "params": side_by_side(a.data.params, b.data.params),
        "metrics": metrics,
        "lineage": side_by_side(lineage_a, lineage_b),
        "packages": side_by_side(recorded_packages(run_a), recorded_packages(run_b)),
    }


def artifact_text(client, run_id: str, path: str) -> str | None:
    """A text artifact of the run, or None where the run has none at `path`."""
    import mlflow

    folder = path.rpartition("/")[0]
    if not any(a.path == path for a in client.list_artifacts(run_id, folder or None)):
        return None
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def recorded_packages(run_id: str) -> dict[str, str]:
    import mlflow

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/env/requirements.txt")
    except Exception:
        return {}
    pairs = (line.split("==", 1) for line in text.splitlines() if "==" in line and not line.startswith("#"))
    return {name: version for name, version in pairs}


def parse_age(text: str) -> float:
    """ "7d" -> seconds; units s, m, h, d, w."""
    match = _DURATION.match(text.strip())
    if not match:
        raise TabtrackError(f"--older-than expects a number and a unit (s, m, h, d, w), e.g. 7d; got {text!r}.")
    return int(match[1]) * _SECONDS[match[2]]


def clean_failed(
    *, experiment: str | None, older_than: str | None, dry_run: bool, tracking_uri: str | None = None
) -> list[str]:
    """Delete (MLflow's soft delete; `mlflow gc` purges) FAILED runs, optionally only older ones."""
    client = mlflow_client(tracking_uri)
    cutoff = time.time() * 1000 - parse_age(older_than) * 1000 if older_than else None
    chosen = [
        run.info.run_id
        for run in client.search_runs(
            _experiment_ids(client, experiment), filter_string="attributes.status = 'FAILED'", max_results=50_000
        )
        if cutoff is None or run.info.start_time < cutoff
    ]
    if not dry_run:
        for run_id in chosen:
            client.delete_run(run_id)
    return chosen


def clean_stale(
    *, experiment: str | None, dry_run: bool, tracking_uri: str | None = None
) -> tuple[list[str], list[str]]:
    """RUNNING runs started on this host whose process is gone -> FAILED. Returns (marked, undecidable):
    runs from other hosts, or without tabtrack's host/pid tags, cannot be checked from here."""
    client = mlflow_client(tracking_uri)
    host = socket.gethostname()
    marked, undecidable = [], []
    for run in client.search_runs(
        _experiment_ids(client, experiment), filter_string="attributes.status = 'RUNNING'", max_results=50_000
    ):
        tags = run.data.tags
        if "tabtrack.pid" not in tags and "mlflow.parentRunId" in tags:  # a fold or model child: its parent's process
            tags = {**client.get_run(tags["mlflow.parentRunId"]).data.tags, **tags}
        pid = tags.get("tabtrack.pid")
        if tags.get("tabtrack.host") != host or not (pid or "").isdigit():
            undecidable.append(run.info.run_id)
            continue
        if process_alive(int(pid)):
            continue
        marked.append(run.info.run_id)
        if not dry_run:
            client.set_tag(run.info.run_id, "error", f"process {pid} on {host} ended without closing the run")
            client.set_terminated(run.info.run_id, status="FAILED")
    return marked, undecidable
