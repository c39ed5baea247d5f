"""`tabtrack report RUN_ID`: the standalone HTML page for a run already in MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tabtrack.errors import TabtrackError
from tabtrack.evaluate.html_report import ReportData, render_report
from tabtrack.tracking.store import resolve_tracking_uri


def run_report(run_id: str, *, tracking_uri: str | None = None) -> str:
    """Read the run's params, metrics, tags and `plots/*.png` back from MLflow and render the page."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TabtrackError(f"run {run_id!r} not found in {uri}; check the id (tabtrack ui lists runs).") from exc
    images: dict[str, bytes] = {}
    if client.list_artifacts(run_id, "plots"):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path="plots", dst_path=tmp, tracking_uri=uri
                )
            )
            images = {f"plots/{png.name}": png.read_bytes() for png in sorted(local.glob("*.png"))}
    experiment = client.get_experiment(run.info.experiment_id)
    return render_report(
        ReportData(
            run_id=run_id,
            run_name=run.info.run_name,
            experiment=experiment.name,
            status=run.info.status,
            params=run.data.params,
            metrics=run.data.metrics,
            tags=run.data.tags,
            images=images,
        )
    )
