"""`tabtrack report RUN_ID`: the standalone HTML page for a run already in MLflow."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
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


def comparison_report(
    run_ids: Sequence[str] = (),
    *,
    experiment: str | None = None,
    top: int = 5,
    metric: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """The comparison page for the given runs, or for the `top` finished runs of `experiment` ranked by the CV
    mean of `metric` (else its test value; default: the task's primary metric) in the metric's direction."""
    from mlflow.exceptions import MlflowException

    from tabtrack.evaluate.comparison import overlaid_curves, render_comparison, render_figures
    from tabtrack.workflows.runs import client_for

    client = client_for(tracking_uri)
    if experiment is not None:
        run_ids = _top_runs(client, experiment, top=top, metric=metric)
    if len(run_ids) < 2:
        raise TabtrackError("a comparison needs two runs or more; pass RUN_A RUN_B [...] or --experiment NAME.")
    views = []
    for run_id in run_ids:
        try:
            views.append(run_view(client, client.get_run(run_id)))
        except MlflowException as exc:
            raise TabtrackError(f"run {run_id!r} not found; check the id (tabtrack runs list shows them).") from exc
    tasks = {view.task for view in views}
    if len(tasks) > 1:
        raise TabtrackError(f"these runs mix tasks ({', '.join(sorted(tasks))}); compare runs of one task.")
    title = experiment or client.get_experiment(client.get_run(run_ids[0]).info.experiment_id).name
    return render_comparison(views, render_figures(overlaid_curves(views)), title=f"{title}: {len(views)} runs")


def run_view(client, run):
    """What the comparison page shows of one run, read back from MLflow."""
    import pandas as pd

    from tabtrack.evaluate.comparison import PREDICTIONS_FILE, RunView
    from tabtrack.workflows.runs import artifact_text, recorded_packages

    run_id = run.info.run_id
    text = artifact_text(client, run_id, PREDICTIONS_FILE)
    predictions = pd.read_csv(io.StringIO(text)) if text is not None else None
    tests = [
        d.dataset.digest
        for d in (run.inputs.dataset_inputs if run.inputs else [])
        if any(t.key == "mlflow.data.context" and t.value == "test" for t in d.tags)
    ]
    return RunView(
        run_id=run_id, run_name=run.info.run_name, params=run.data.params, metrics=run.data.metrics,
        tags=run.data.tags, packages=recorded_packages(run_id), test_digest=tests[0] if tests else None,
        predictions=predictions,
    )  # fmt: skip


def _top_runs(client, experiment: str, *, top: int, metric: str | None) -> list[str]:
    from tabtrack.evaluate.metrics import GREATER_IS_BETTER, primary_metric

    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TabtrackError(f"no experiment {experiment!r}; tabtrack runs list shows them.")
    # Model runs, nested in a compare or not; folds and trials hold no test metrics
    runs = [
        r
        for r in client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'")
        if any(k.startswith("test_") for k in r.data.metrics)
    ]
    if not runs:
        raise TabtrackError(f"experiment {experiment!r} has no finished runs with test metrics.")
    if metric is None:
        task = runs[0].data.params.get("task", "classification")
        classes = runs[0].data.params.get("n_classes")
        metric = primary_metric(task, int(classes) if classes else 2)
    if metric not in GREATER_IS_BETTER:
        raise TabtrackError(f"unknown --metric {metric!r}; use one of {', '.join(sorted(GREATER_IS_BETTER))}.")

    def score(run) -> float:
        value = run.data.metrics.get(f"cv_{metric}_mean", run.data.metrics.get(f"test_{metric}"))
        if value is None:
            return float("-inf")
        return value if GREATER_IS_BETTER[metric] else -value

    return [r.info.run_id for r in sorted(runs, key=score, reverse=True)[:top]]
