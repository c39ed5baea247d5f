"""`tabtrack monitor`: how far what a model meets has moved from what it was trained on, and how good it still is.

The rows: those the prediction log holds for the model (`--since`, `--until`), or a file scored now (`--data`).
The reference: the profile its training run recorded (`monitoring/reference.json`), or one built from a file
(`--reference`, for runs recorded before there was one). Each input column, the predictions and each class
probability are compared (evaluate/drift.py); rows with labels (`--labels FILE --on COLUMN`, joined on the
request id, or a labelled `--data` file) are scored with the run's metrics, beside its test metrics. The result
is a table, a page, and a run in the model's monitoring experiment, so drift is charted where the runs are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.config import MonitoringConfig
from tabtrack.data.profile import REFERENCE_FILE
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.drift import ColumnDrift, column_drift
from tabtrack.serving.log_reader import read_log
from tabtrack.serving.prediction_log import DEFAULT_LOCATION

log = logging.getLogger(__name__)

_DURATION = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class MonitorReport:
    model_uri: str
    model: dict[str, Any]  # name, version, run_id
    source: str  # where the rows came from: the log and its window, or a file
    rows: int
    columns: list[ColumnDrift]  # the inputs, biggest PSI first
    predictions: list[ColumnDrift]  # the prediction, then each class probability
    missing_columns: list[str] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    labelled_rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # on the labelled rows
    test_metrics: dict[str, float] = field(default_factory=dict)  # the training run's test metrics
    alarms: list[str] = field(default_factory=list)
    thresholds: MonitoringConfig = field(default_factory=MonitoringConfig)
    run_id: str | None = None  # the monitoring run
    page: str = ""
    pair: Any = None  # evaluate/agreement.PairComparison: the champion against its shadow (--shadow)

    @property
    def drifted(self) -> bool:
        return bool(self.alarms)

    def crossed(self, drift: ColumnDrift) -> bool:
        """Whether this column (or prediction) crossed a threshold."""
        t = self.thresholds
        return drift.psi > t.psi or drift.null_jump > t.null_share_jump or drift.new_share > t.new_category_share


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """`7d`, `12h`, `30m`, `2w` before now, or an ISO date or time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _DURATION:
        return now - timedelta(seconds=int(text[:-1]) * _DURATION[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a time: use 7d, 12h, 30m, 2w or a date (2026-11-02[T10:00])."
                          ) from None  # fmt: skip
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def monitor(
    model_uri: str,
    *,
    since: str | None = None,
    until: str | None = None,
    data: str | Path | None = None,
    labels: str | Path | None = None,
    on: str = "request_id",
    reference: str | Path | None = None,
    log_location: str | None = None,
    thresholds: MonitoringConfig | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    shadow: str | None = None,
) -> MonitorReport:
    """Compare the rows `model_uri` met (logged since `since`, default a day, or the `data` file) with its
    reference; see the module docstring. `thresholds`: what counts as drift (default: the run's config's).
    `shadow`: the model that scored the same requests in shadow: how often the two agree, and on labelled rows
    both models' metrics with the paired interval of the shadow's difference."""
    from tabtrack.serving.model import describe, load

    if data is not None and (since is not None or until is not None):
        raise ConfigError("pass --data FILE or a window of the log (--since/--until), not both.")
    if data is not None and shadow is not None:
        raise ConfigError("--shadow compares what the two models logged for the same requests; drop --data.")
    # The model itself is loaded only to score rows (a --data or --reference file): the log holds its answers.
    model = load(model_uri, tracking_uri=tracking_uri) if data is not None or reference is not None else None
    uri, metadata = (model.uri, model.metadata) if model else describe(model_uri, tracking_uri=tracking_uri)
    meta = {key: metadata.get(key) for key in ("name", "version", "run_id")}
    run = _training_run(meta["run_id"], tracking_uri)
    target = run.data.params.get("target")
    if reference is None:
        profile = _recorded_reference(run, tracking_uri)
    else:
        profile = _built_reference(model, reference, task=run.data.params.get("task"))
    task = run.data.params.get("task") or profile["predictions"].get("task", "regression")
    classes = list(profile["predictions"].get("proba", {})) or None
    thresholds = thresholds or _recorded_thresholds(run, tracking_uri)

    if data is not None:
        current, source = _scored_file(model, data, target), f"file {data}"
    else:
        start, end = parse_time(since or "1d"), parse_time(until) if until else None
        location = log_location or DEFAULT_LOCATION
        current = read_log(location, since=start, until=end, run_id=meta["run_id"],
                           with_ids=labels is not None or shadow is not None)  # fmt: skip
        source = f"the prediction log at {location}, {_moment(start)} to {_moment(end)} UTC"
        if current.empty:
            raise TabtrackError(
                f"no logged predictions of {model_uri} in {source}; widen --since, or check --log-predictions."
            )
    inputs = [c for c in current.columns if c not in _OWN and not c.startswith("proba_") and c != "_label"]
    names = {c.removeprefix("input."): c for c in inputs}
    pairs = [(name, ref, current[names[name]]) for name, ref in profile["columns"].items() if name in names]
    report = MonitorReport(
        model_uri=uri, model=meta, source=source, rows=len(current), thresholds=thresholds,
        columns=sorted(_drifts(pairs, profile.get("rows")), key=lambda d: -d.psi),
        predictions=_drifts(_prediction_pairs(profile["predictions"], current), profile["predictions"].get("rows")),
        missing_columns=[name for name in profile["columns"] if name not in names],
        new_columns=[name for name in names if name not in profile["columns"]],
        test_metrics={k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")},
    )  # fmt: skip
    if labels is not None:
        current = _joined(current, labels, on=on, target=target)
    if "_label" in current.columns:
        _score_labels(report, current, task=task, classes=classes)
    if shadow is not None:
        report.pair = _against_shadow(shadow, current, source, start, end, location, task, classes, tracking_uri)
    report.alarms = _alarms(report)
    from tabtrack.pages.monitor_page import render_monitor_page

    report.page = render_monitor_page(report)
    if track:
        _record(report, tracking_uri=tracking_uri)
    return report


def _against_shadow(uri, current, source, start, end, location, task, classes, tracking_uri):
    """The champion's logged answers against the shadow's on the same requests."""
    from tabtrack.evaluate.agreement import compare_pair
    from tabtrack.serving.model import describe

    shadow_uri, meta = describe(uri, tracking_uri=tracking_uri)
    rows = read_log(location, since=start, until=end, run_id=meta.get("run_id"), roles=("shadow",))
    if rows.empty:
        raise TabtrackError(f"no shadow answers of {uri} in {source}; serve the champion with --shadow {uri}.")
    about = {"uri": shadow_uri, **{key: str(meta.get(key) or "") for key in ("name", "version", "run_id")}}
    return compare_pair(current, rows, task=task, classes=classes, about=about)


def _moment(when: datetime | None) -> str:
    return "now" if when is None else f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


_OWN = ("request_id", "row", "timestamp", "model_name", "model_version", "model_run_id", "role", "prediction")


def _training_run(run_id: str | None, tracking_uri: str | None):
    from mlflow.exceptions import MlflowException

    from tabtrack.tracking.store import mlflow_client

    if not run_id:
        raise TabtrackError("the model names no training run (a model folder?); monitor a logged or registered one.")
    try:
        return mlflow_client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise TabtrackError(f"the model's training run {run_id} is not in the tracking store: {exc.message}") from exc


def _recorded_reference(run, tracking_uri: str | None) -> dict[str, Any]:
    from tabtrack.commands.runs import artifact_text
    from tabtrack.tracking.store import mlflow_client

    text = artifact_text(mlflow_client(tracking_uri), run.info.run_id, REFERENCE_FILE)
    if text is None:
        raise TabtrackError(
            f"run {run.info.run_id} has no {REFERENCE_FILE} (it was recorded before tabtrack kept one); build the "
            "reference from its training data: --reference FILE."
        )
    return json.loads(text)


def _built_reference(model, reference: str | Path, *, task: str | None) -> dict[str, Any]:
    """A reference built now from a file, its rows scored by the model."""
    from tabtrack.data.load import load_table
    from tabtrack.data.profile import reference_profile

    frame = load_table(reference)
    X = frame[[c for c in model.columns if c in frame.columns]]
    predictions, proba = model.score(X)
    task = task or ("classification" if model.classes is not None else "regression")
    return reference_profile(X, task=task, predictions=predictions, proba=proba, classes=model.classes)


def _recorded_thresholds(run, tracking_uri: str | None) -> MonitoringConfig:
    """The `monitoring:` section of the run's config, where it has one; else the defaults."""
    import yaml

    from tabtrack.commands.runs import artifact_text
    from tabtrack.tracking.store import mlflow_client

    text = artifact_text(mlflow_client(tracking_uri), run.info.run_id, "config/resolved.yaml")
    recorded = (yaml.safe_load(text) or {}).get("monitoring") if text else None
    return MonitoringConfig.model_validate(recorded) if isinstance(recorded, dict) else MonitoringConfig()


def _scored_file(model, data: str | Path, target: str | None) -> pd.DataFrame:
    """A file's rows scored now, as the log would hold them (a target column kept as the label)."""
    from tabtrack.data.load import load_table
    from tabtrack.data.remote import local_file
    from tabtrack.serving.predict import with_predictions

    frame = load_table(local_file(data))
    inputs = frame[[c for c in frame.columns if c != target]]
    predictions, proba = model.score(inputs[[c for c in model.columns if c in inputs.columns]])
    if model.classes is not None:  # labels as the log and the reference hold them
        predictions = np.asarray(predictions).astype(str)
    scored = with_predictions(inputs, predictions, proba, model.classes)
    if target and target in frame.columns:
        scored["_label"] = frame[target].to_numpy()
    return scored


def _drifts(pairs: list[tuple[str, dict[str, Any], pd.Series]], reference_rows: int | None) -> list[ColumnDrift]:
    """Each column's drift; two threads, as binning a million numbers is numpy work that releases the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    def drift(pair):
        return column_drift(*pair, reference_rows=reference_rows)

    if len(pairs) < 4 or len(pairs[0][2]) < 100_000:
        return [drift(pair) for pair in pairs]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(drift, pairs))


def _prediction_pairs(reference: dict[str, Any], current: pd.DataFrame) -> list[tuple[str, dict[str, Any], pd.Series]]:
    pairs = []
    if "prediction" in current.columns and "prediction" in reference:
        pairs.append(("prediction", reference["prediction"], current["prediction"]))
    for label, profile in reference.get("proba", {}).items():
        if f"proba_{label}" in current.columns:
            pairs.append((f"proba_{label}", profile, current[f"proba_{label}"]))
    return pairs


def _joined(current: pd.DataFrame, labels: str | Path, *, on: str, target: str | None) -> pd.DataFrame:
    """The rows with their labels: the labels file's `on` column matched to the request id (and its `row`
    column, when it has one, to the row within the request)."""
    from tabtrack.data.load import load_table

    table = load_table(labels)
    if on not in table.columns:
        raise ConfigError(
            f"--on {on!r} is not a column of {labels}; its columns: {', '.join(map(str, table.columns))}."
        )
    label = target if target in table.columns else next((c for c in table.columns if c not in (on, "row")), None)
    if label is None:
        raise ConfigError(f"{labels} has no label column besides {on!r}; add the target column ({target}).")
    keys = ["request_id", "row"] if "row" in table.columns else ["request_id"]
    right = table.rename(columns={on: "request_id", label: "_label"})[[*keys, "_label"]]
    right["request_id"] = right["request_id"].astype(str)
    if keys == ["request_id"] and current.duplicated("request_id").any():
        raise ConfigError(f"requests of several rows need a `row` column in {labels} beside {on!r}.")
    return current.drop(columns=["_label"], errors="ignore").merge(right, on=keys, how="left")


def _score_labels(report: MonitorReport, current: pd.DataFrame, *, task: str, classes) -> None:
    from tabtrack.evaluate.metrics import compute_metrics

    labelled = current.loc[current["_label"].notna()]
    report.labelled_rows = len(labelled)
    if labelled.empty:
        return
    if task == "classification":
        truth = labelled["_label"].astype(str).to_numpy()
        proba_columns = [f"proba_{c}" for c in classes] if classes is not None else []
        proba = labelled[proba_columns].to_numpy(float) if all(c in labelled for c in proba_columns) else None
        labels = [str(c) for c in classes] if classes is not None else None
        metrics = compute_metrics(task, truth, labelled["prediction"].astype(str).to_numpy(), proba, classes=labels)
    else:
        metrics = compute_metrics(task, labelled["_label"].astype(float), labelled["prediction"].astype(float))
    report.metrics = {k: float(v) for k, v in metrics.items()}


def _alarms(report: MonitorReport) -> list[str]:
    t = report.thresholds
    alarms = [f"input column {name!r} is missing from the rows" for name in report.missing_columns]
    for drift in [*report.columns, *report.predictions]:
        if drift.psi > t.psi:
            alarms.append(f"{drift.column}: PSI {drift.psi:.3f} > {t.psi:g}")
        if drift.null_jump > t.null_share_jump:
            alarms.append(f"{drift.column}: missing values {drift.null_share_reference:.1%} -> {drift.null_share:.1%}")
        if drift.new_share > t.new_category_share:
            alarms.append(f"{drift.column}: {drift.new_share:.1%} of values in categories never seen in training")
    return alarms


def _record(report: MonitorReport, *, tracking_uri: str | None) -> None:
    """A run in the model's monitoring experiment: drift metrics, the page and the numbers behind it."""
    from tabtrack.core.run_tags import standard_tags
    from tabtrack.evaluate.slices import metric_key
    from tabtrack.tracking import make_tracker

    name = report.model["name"] or f"run-{report.model['run_id']}"
    tags = {
        **standard_tags(kind="monitor"), "model.name": str(report.model["name"] or ""),
        "model.version": str(report.model["version"] or ""), "model.run_id": str(report.model["run_id"]),
        "model.uri": report.model_uri, "monitor.source": report.source, "monitor.drifted": str(report.drifted).lower(),
    }  # fmt: skip
    metrics = {f"psi_{metric_key(d.column)}": d.psi for d in [*report.columns, *report.predictions]}
    metrics.update({f"null_share_{metric_key(d.column)}": d.null_share for d in report.columns})
    metrics.update(
        rows=report.rows, labelled_rows=report.labelled_rows, drifted_columns=sum(map(report.crossed, report.columns)),
        drifted=sum(map(report.crossed, [*report.columns, *report.predictions])),
        max_psi=max((d.psi for d in report.columns), default=0.0),
        **{f"labelled_{k}": v for k, v in report.metrics.items()},
    )  # fmt: skip
    if report.pair is not None:
        metrics.update(_pair_metrics(report.pair))
    run_name = f"monitor_{datetime.now():%Y%m%d_%H%M%S}"
    with make_tracker(tracking_uri=tracking_uri).run(
        experiment=f"monitoring-{name}", run_name=run_name, tags=tags
    ) as run:
        run.log_params(
            {"rows": report.rows, **{f"threshold.{k}": v for k, v in report.thresholds.model_dump().items()}}
        )
        run.log_metrics(metrics)
        report.run_id = run.run_id
        run.log_text(report.page, "monitor.html")
        run.log_text(json.dumps(_as_json(report), indent=1), "monitoring/drift.json")


def _pair_metrics(pair) -> dict[str, float]:
    metrics = {"shadow_rows": pair.rows, "shadow_agreement": pair.agreement, "shadow_labelled_rows": pair.labelled_rows}
    metrics.update({f"shadow_{k}": v for k, v in pair.shadow_metrics.items()})
    metrics.update({f"champion_{k}": v for k, v in pair.champion_metrics.items()})
    if pair.difference is not None:
        d = pair.difference
        metrics.update(shadow_improvement=d.improvement, shadow_improvement_low=d.low, shadow_improvement_high=d.high)
    return {k: v for k, v in metrics.items() if v == v}  # NaN: nothing to chart


def _as_json(report: MonitorReport) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "model_uri": report.model_uri, "model": report.model, "source": report.source, "rows": report.rows,
        "alarms": report.alarms, "columns": [asdict(d) for d in report.columns],
        "predictions": [asdict(d) for d in report.predictions], "missing_columns": report.missing_columns,
        "new_columns": report.new_columns, "labelled_rows": report.labelled_rows, "metrics": report.metrics,
        "test_metrics": report.test_metrics, "shadow": asdict(report.pair) if report.pair is not None else None,
    }  # fmt: skip
