"""`tabtrack report RUN_ID`: the standalone HTML page for a run already in MLflow."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tabtrack.errors import TabtrackError
from tabtrack.pages.run_page import ReportData, render_report
from tabtrack.tracking.store import mlflow_client, resolve_tracking_uri


def run_report(run_id: str, *, tracking_uri: str | None = None) -> str:
    """Read the run's params, metrics, tags and `plots/*.png` back from MLflow and render the page."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri)
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

    from tabtrack.pages.comparison_page import overlaid_curves, render_comparison, render_figures

    client = mlflow_client(tracking_uri)
    if experiment is not None:
        run_ids = _top_runs(client, experiment, top=top, metric=metric)
    if len(run_ids) < 2:
        raise TabtrackError("a comparison needs two runs or more; pass RUN_A RUN_B [...] or --experiment NAME.")
    views = []
    for run_id in run_ids:
        try:
            views.append(run_view(client, client.get_run(run_id), tracking_uri=resolve_tracking_uri(tracking_uri)))
        except MlflowException as exc:
            raise TabtrackError(f"run {run_id!r} not found; check the id (tabtrack runs list shows them).") from exc
    tasks = {view.task for view in views}
    if len(tasks) > 1:
        raise TabtrackError(f"these runs mix tasks ({', '.join(sorted(tasks))}); compare runs of one task.")
    title = experiment or client.get_experiment(client.get_run(run_ids[0]).info.experiment_id).name
    return render_comparison(views, render_figures(overlaid_curves(views)), title=f"{title}: {len(views)} runs")


def run_view(client, run, *, tracking_uri: str):
    """What the comparison page shows of one run, read back from MLflow (and where the MLflow UI shows it, when
    the tracking URI is a server's)."""
    import pandas as pd

    from tabtrack.commands.runs import artifact_text, recorded_packages
    from tabtrack.evaluate.fitted_model import PREDICTIONS_FILE
    from tabtrack.pages.comparison_page import RunView
    from tabtrack.tracking.store import is_local_store, run_url

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
        ui_url=None if is_local_store(tracking_uri) else run_url(tracking_uri, run.info.experiment_id, run_id),
    )  # fmt: skip


def _top_runs(client, experiment: str, *, top: int, metric: str | None) -> list[str]:
    from tabtrack.evaluate.metrics import GREATER_IS_BETTER, chosen_metric

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
    classes = runs[0].data.params.get("n_classes")
    metric = chosen_metric(metric, runs[0].data.params.get("task", "classification"), int(classes) if classes else 2)

    def score(run) -> float:
        value = run.data.metrics.get(f"cv_{metric}_mean", run.data.metrics.get(f"test_{metric}"))
        if value is None:
            return float("-inf")
        return value if GREATER_IS_BETTER[metric] else -value

    return [r.info.run_id for r in sorted(runs, key=score, reverse=True)[:top]]
