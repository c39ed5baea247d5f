"""`tabtrack train`: one data file and config in, one complete, standard MLflow run out."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.config import RunConfig, deep_merge, drop_none, resolve_config
from tabtrack.evaluate.evidence import (
    Evidence,
    draw_model_plots,
    draw_prediction_plots,
    model_evidence,
    prediction_evidence,
    prediction_plot_data,
)
from tabtrack.evaluate.html_report import ReportData, render_report
from tabtrack.evaluate.metrics import aggregate_folds, compute_metrics, prefixed
from tabtrack.lineage import requirements_txt
from tabtrack.models import build_pipeline
from tabtrack.tracking import Tracker, make_tracker
from tabtrack.tracking.worker import WorkerTracker
from tabtrack.workflows.checks import CheckedInputs, check_training
from tabtrack.workflows.recording import (
    log_datasets,
    model_artifact,
    native_artifact,
    resolved_yaml,
    run_params,
    run_tags,
    train_rows_scored,
)

log = logging.getLogger(__name__)

# Called as progress(stage, done, total), e.g. ("fold", 2, 5).
Progress = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    """What a training run produced; `metrics[split][name]` with split in train, cv, test."""

    run_id: str | None
    experiment: str
    run_name: str
    task: str
    model: str
    metrics: dict[str, dict[str, float]]
    pipeline: Any
    config: RunConfig
    classes: list | None = None
    model_uri: str | None = None
    ui_url: str | None = None
    fold_run_ids: list[str] = field(default_factory=list)
    offline_bundle: str | None = None  # set when the run was recorded offline (tabtrack sync uploads it)
    # The held-out rows, kept so a champion gate scores old and new models on the same data.
    X_test: Any = field(default=None, repr=False)
    y_test: Any = field(default=None, repr=False)


def train(
    data: str | Path | None = None,
    *,
    target: str | None = None,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    config: str | Path | RunConfig | None = None,
    task: str | None = None,
    cv: int | None = None,
    test_size: float | None = None,
    random_state: int | None = None,
    experiment: str | None = None,
    device: str | None = None,
    tags: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
    tracking_uri: str | None = None,
    track: bool = True,
    tracker: Tracker | None = None,
    progress: Progress | None = None,
    test_data: str | Path | None = None,
    offline: bool = False,
) -> TrainResult:
    """Train one model and record it as one standard MLflow run.

    Example:
        >>> result = tabtrack.train("examples/breast_cancer.csv", target="target",
        ...                         model="hist_gradient_boosting", params={"max_depth": 4})
        >>> result.metrics["test"]["roc_auc"]
    """
    resolved = build_config(
        data, target=target, model=model, params=params, config=config, task=task, cv=cv, test_size=test_size,
        random_state=random_state, experiment=experiment, device=device, tags=tags, overrides=overrides,
        test_data=test_data,
    )  # fmt: skip
    return run_training(
        resolved, tracker=tracker, tracking_uri=tracking_uri, track=track, progress=progress, offline=offline
    )


def build_config(
    data: str | Path | None = None,
    *,
    target: str | None = None,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    config: str | Path | RunConfig | None = None,
    task: str | None = None,
    cv: int | None = None,
    test_size: float | None = None,
    random_state: int | None = None,
    experiment: str | None = None,
    device: str | None = None,
    tags: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
    test_data: str | Path | None = None,
) -> RunConfig:
    """Config file (or a RunConfig) < keyword options (None means "not given") < `--set` overrides."""
    if isinstance(config, RunConfig):
        base = config.model_dump()
        config = None
    else:
        base = {}
    options = {
        "data": str(data) if data is not None else None,
        "test_data": str(test_data) if test_data is not None else None,
        "target": target,
        "task": task,
        "model": {"type": model, "params": dict(params) if params else None},
        "test_size": test_size,
        "random_state": random_state,
        "cv_folds": cv,
        "experiment": experiment,
        "device": device,
        "tags": dict(tags) if tags else None,
    }
    return resolve_config(file=config, options=_merge_base(base, options), overrides=overrides)


def run_training(
    config: RunConfig,
    *,
    tracker: Tracker | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    progress: Progress | None = None,
    checked: CheckedInputs | None = None,
    offline: bool = False,
) -> TrainResult:
    """Check every input first (no run, not even a store, exists if one is bad), then train and record.
    `checked` passes inputs a caller (compare) already checked."""
    started = None
    if tracker is None and track:
        # A worker forked by the warm tracking agent records the run while this process trains;
        # None where there is no agent, and the run is tracked in this process.
        tracker = started = WorkerTracker.start(tracking_uri=tracking_uri, offline=offline)
    try:
        checked = checked or check_training(config)
        tracker = tracker or make_tracker(track=track, tracking_uri=tracking_uri, offline=offline)
        run_name = f"{checked.spec.name}_{datetime.now():%Y%m%d_%H%M%S}"
        _seed_everything(checked.config.random_state)
        params, tags = run_params(checked), run_tags(checked)
    except BaseException:
        if started is not None:
            started.close()  # no run was started: the worker just goes
        raise
    with tracker.run(experiment=checked.experiment, run_name=run_name, tags=tags) as run:
        result = record_training(run, checked, run_name=run_name, params=params, tags=tags, progress=progress)
    result.offline_bundle = run.offline_bundle  # known only once the run has ended (it may fail over late)
    if result.offline_bundle:
        result.ui_url = None
    return result


def record_training(
    run: Tracker,
    checked: CheckedInputs,
    *,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    progress: Progress | None = None,
) -> TrainResult:
    """Everything a standard run holds, logged into the already started `run` (tune refits into its parent)."""
    spec, cfg, split = checked.spec, checked.config, checked.split
    run.log_params(params)
    run.log_text(resolved_yaml(cfg), "config/resolved.yaml")
    run.log_text(requirements_txt(), "env/requirements.txt")
    if checked.validation is not None:
        run.log_text(checked.validation.to_json(), "data_validation.json")
    log_datasets(run, checked)

    metrics: dict[str, dict[str, float]] = {}
    fold_run_ids: list[str] = []
    if cfg.cv_folds >= 2:
        metrics["cv"], fold_run_ids = _cross_validate(run, checked, progress)
        run.log_metrics(prefixed("cv", metrics["cv"]))

    pipeline = new_pipeline(checked)
    _report_epochs(pipeline.named_steps["model"], run, progress)
    run.warm_up()
    pipeline.fit(split.X_train, split.y_train)
    # What follows the fit is ordered for trackers that work in other processes (the agent's worker and
    # compute helper): drawing the plots and storing the model are its longest pieces of work, so each
    # starts as soon as its inputs exist, and this process evaluates meanwhile. The model is awaited at the end.
    # Measured on a 2-core box (RF 20k): the test predictions' plots, most of the drawing, were the last
    # to finish, so they go first (~0.1 s sooner than after the model's pickling and the importance);
    # storing the model then still ends about when the drawing does.
    test_scores, y_pred, proba = evaluate_split(pipeline, split.X_test, split.y_test, checked)
    task, classes = checked.dataset.task, checked.dataset.classes
    evidence, drawn = Evidence(), []
    if run.stores_artifacts:
        predictions = prediction_plot_data(
            split.y_test, y_pred, proba, task=task, classes=classes, model_name=spec.name
        )
        prediction_plots = run.compute_later(draw_prediction_plots, predictions)
    model_uri = run.log_model_later(model_artifact(pipeline, checked))
    if spec.native_flavor:
        run.log_model_later(native_artifact(pipeline, checked))
    if run.stores_artifacts:
        evidence.add(model_evidence(
            pipeline, split.X_test, split.y_test, model_name=spec.name, random_state=cfg.random_state
        ))  # fmt: skip
        drawn = [run.compute_later(draw_model_plots, evidence.model_plots), prediction_plots]  # the report's order
    evidence.add(prediction_evidence(
        split.y_test, y_pred, proba, task=task, classes=classes, thresholds=cfg.thresholds,
        with_reports=run.stores_artifacts,
    ))  # fmt: skip
    metrics["train"], _, _ = evaluate_split(pipeline, *train_scoring_rows(checked), checked)
    metrics["test"] = {**test_scores, **evidence.metrics}
    for split_name in ("train", "test"):
        run.log_metrics(prefixed(split_name, metrics[split_name]))
    run.log_metrics(evidence.run_metrics)
    run.log_params(evidence.params)
    for path, text in evidence.texts.items():
        run.log_text(text, path)
    run.flush()  # the values go to the store now, while the plots are still being drawn, not after them
    images = {path: png for plots in drawn for path, png in plots().items()}
    for path, png in images.items():
        run.log_bytes(png, path)

    flat_metrics = {f"{split_name}_{k}": v for split_name, values in metrics.items() for k, v in values.items()}
    report = ReportData(
        run_id=run.run_id, run_name=run_name, experiment=checked.experiment, status="FINISHED",
        params={k: str(v) for k, v in {**params, **evidence.params}.items()},
        metrics=flat_metrics, tags=tags, images=images,
    )  # fmt: skip
    run.log_text(render_report(report), "report.html")
    return TrainResult(
        run_id=run.run_id,
        experiment=checked.experiment,
        run_name=run_name,
        task=checked.dataset.task,
        model=spec.name,
        metrics=metrics,
        pipeline=pipeline,
        config=cfg,
        classes=checked.dataset.classes,
        model_uri=model_uri(),
        ui_url=run.ui_url,
        fold_run_ids=fold_run_ids,
        X_test=split.X_test,
        y_test=split.y_test,
    )


def write_metrics_file(result: TrainResult, path: str | Path) -> None:
    """Metrics by split as JSON, the shape `dvc metrics show` reads."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")


# -- training pieces --------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)


def new_pipeline(checked: CheckedInputs):
    from sklearn.base import clone

    return build_pipeline(
        clone(checked.estimator),
        numeric=checked.dataset.numeric_columns,
        categorical=checked.dataset.categorical_columns,
    )


def train_scoring_rows(checked: CheckedInputs) -> tuple[pd.DataFrame, pd.Series]:
    """The training rows train_* metrics are computed on: all of them, or on big splits a random sample
    (seeded by random_state) of `train_metrics_rows`. Predicting 800k training rows again costs more than a
    quarter of a 1M-row HistGradientBoosting run, and a 200k sample pins train accuracy to about 0.1%."""
    X, y = checked.split.X_train, checked.split.y_train
    rows = train_rows_scored(checked)
    if rows == len(X):
        return X, y
    positions = np.sort(np.random.default_rng(checked.config.random_state).choice(len(X), rows, replace=False))
    return X.iloc[positions], y.iloc[positions]


def evaluate_split(pipeline, X: pd.DataFrame, y: pd.Series, checked: CheckedInputs):
    """`(metrics, y_pred, proba)` on one split, custom metrics included."""
    task = checked.dataset.task
    y_pred, proba = predict_with_proba(pipeline, X, task)
    scores = compute_metrics(task, y, y_pred, proba, classes=checked.dataset.classes)
    for metric in checked.custom_metrics:
        scores[metric.name] = metric(np.asarray(y), y_pred, proba)
    return scores, y_pred, proba


def predict_with_proba(pipeline, X: pd.DataFrame, task: str):
    """Labels and probabilities from one pass through the pipeline: the label is the most probable
    class, which is what predict() returns for every family (half the time on big splits)."""
    if task != "classification" or not hasattr(pipeline, "predict_proba"):
        return pipeline.predict(X), None
    proba = pipeline.predict_proba(X)
    classes = np.asarray(pipeline.classes_)
    return classes[np.argmax(proba, axis=1)], proba


def _cross_validate(
    run: Tracker, checked: CheckedInputs, progress: Progress | None
) -> tuple[dict[str, float], list[str]]:
    """K folds on the training split, one child run `fold_{k}` each; returns mean/std and child ids."""
    from sklearn.model_selection import KFold, StratifiedKFold

    cfg, split = checked.config, checked.split
    splitter_cls = StratifiedKFold if checked.dataset.task == "classification" else KFold
    splitter = splitter_cls(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.random_state)
    fold_metrics: list[dict[str, float]] = []
    children: list[Tracker] = []
    for k, (fit_idx, val_idx) in enumerate(splitter.split(split.X_train, split.y_train), start=1):
        with run.child_run(f"fold_{k}") as child:
            child.log_params(
                {"fold": k, "cv_folds": cfg.cv_folds, "n_train_samples": len(fit_idx), "n_val_samples": len(val_idx)}
            )
            pipeline = new_pipeline(checked).fit(split.X_train.iloc[fit_idx], split.y_train.iloc[fit_idx])
            scores, _, _ = evaluate_split(pipeline, split.X_train.iloc[val_idx], split.y_train.iloc[val_idx], checked)
            child.log_metrics(prefixed("cv", scores))
            fold_metrics.append(scores)
            children.append(child)
        if progress:
            progress("fold", k, cfg.cv_folds)
    # Asked once the folds are done: a background tracker creates the runs while folds train.
    run_ids = [child.run_id for child in children if child.run_id]
    return aggregate_folds(fold_metrics), run_ids


def _report_epochs(estimator, run: Tracker, progress: Progress | None) -> None:
    """Iterative estimators that report epochs (the MLP) log each one with step=epoch (buffered)."""
    if not hasattr(type(estimator), "epoch_callback"):
        return
    total = getattr(estimator, "epochs", 0)

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        run.log_metrics(values, step=epoch)
        if progress:
            progress("epoch", epoch, total)

    estimator.epoch_callback = on_epoch


def _merge_base(base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A RunConfig passed as `config=` is the base layer; explicit keyword arguments win."""
    return deep_merge(base, drop_none(options))
