"""`tabtrack train`: one data file and config in, one complete, standard MLflow run out."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.config import RunConfig, deep_merge, drop_none, resolve_config
from tabtrack.evaluate.importance import final_estimator
from tabtrack.evaluate.metrics import prefixed
from tabtrack.evaluate.plots import import_matplotlib
from tabtrack.evaluate.slices import SLICES_FILE
from tabtrack.lineage import requirements_txt
from tabtrack.models import build_pipeline
from tabtrack.models.own import is_pipeline, own_spec
from tabtrack.tracking import Tracker, make_tracker
from tabtrack.workflows.checks import CheckedInputs, check_training
from tabtrack.workflows.evaluation import (
    NamedMetric,
    cross_validate,
    evaluate_fitted,
    log_evaluation,
    log_report,
    scoring_rows,
)
from tabtrack.workflows.recording import (
    log_datasets,
    model_artifact,
    native_artifact,
    resolved_yaml,
    run_params,
    run_tags,
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
    params: dict[str, Any] = field(default_factory=dict, repr=False)  # as logged
    tags: dict[str, str] = field(default_factory=dict, repr=False)
    images: dict[str, bytes] = field(default_factory=dict, repr=False)  # "plots/<name>.png" -> PNG
    predictions: pd.DataFrame | None = field(default=None, repr=False)  # the test split's, as compare.html draws

    def flat_metrics(self) -> dict[str, float]:
        """As logged: `test_roc_auc`, `cv_roc_auc_mean`, ..."""
        return {f"{split}_{name}": value for split, values in self.metrics.items() for name, value in values.items()}

    def _repr_html_(self) -> str:
        """Jupyter: the metric table and the main plots inline."""
        from tabtrack.evaluate.html_report import notebook_html

        return notebook_html(
            title=f"{self.model} · {self.task} · {self.experiment}", run_id=self.run_id, ui_url=self.ui_url,
            metrics=self.flat_metrics(), images=self.images,
        )  # fmt: skip


def train(
    data: str | Path | pd.DataFrame | None = None,
    *,
    target: str | None = None,
    model: str | Any = None,
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
    run_name: str | None = None,
    log_params: Mapping[str, Any] | None = None,
    code_paths: Iterable[str | Path] = (),
    fit_ahead: bool = False,
) -> TrainResult:
    """Train one model and record it as one standard MLflow run.

    `data` is a CSV/Parquet file or a DataFrame (its lineage is then a digest of the frame). `model` is a
    family name, your own factory `"path/to/file.py:function"`, or an estimator or Pipeline object (a
    Pipeline of yours is trained as it is, with no tabtrack preprocessing added). `log_params` are recorded
    as given; `code_paths` ship with the model. `fit_ahead` (what `tabtrack train` does) fits a family's
    model in a worker thread while MLflow starts, where it can (see FitAhead); it is off by default because
    a new thread does not see settings the caller made for its own thread (threadpoolctl's limits,
    `sklearn.config_context`, joblib's `parallel_config`).

    Example:
        >>> result = tabtrack.train("examples/breast_cancer.csv", target="target",
        ...                         model="hist_gradient_boosting", params={"max_depth": 4})
        >>> result.metrics["test"]["roc_auc"]
    """
    frame = data if isinstance(data, pd.DataFrame) else None
    obj = model if model is not None and not isinstance(model, str) else None
    resolved = build_config(
        None if frame is not None else data, target=target,
        model=own_spec(obj).name if obj is not None else model, params=params, config=config, task=task,
        cv=cv, test_size=test_size, random_state=random_state, experiment=experiment, device=device, tags=tags,
        overrides=overrides, test_data=test_data, run_name=run_name, log_params=log_params, code_paths=code_paths,
    )  # fmt: skip
    checked = check_training(resolved, frame=frame, model=obj)
    return run_training(
        resolved, tracker=tracker, tracking_uri=tracking_uri, track=track, progress=progress, offline=offline,
        checked=checked, fit_ahead=fit_ahead,
    )  # fmt: skip


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
    run_name: str | None = None,
    log_params: Mapping[str, Any] | None = None,
    code_paths: Iterable[str | Path] = (),
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
        "run_name": run_name,
        "extra_params": dict(log_params) if log_params else None,
        "code_paths": [str(p) for p in code_paths] or None,
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
    fit_ahead: bool = False,
) -> TrainResult:
    """Check every input first (no run, not even a store, exists if one is bad), then train and record.
    `checked` passes inputs a caller (compare) already checked."""
    checked = checked or check_training(config)
    run_name = checked.config.run_name or f"{run_name_stem(checked.spec.name)}_{datetime.now():%Y%m%d_%H%M%S}"
    _seed_everything(checked.config.random_state)
    fitting = FitAhead(checked) if fit_ahead and track and tracker is None and FitAhead.possible(checked) else None
    tracker = tracker or make_tracker(track=track, tracking_uri=tracking_uri, offline=offline)
    params, tags = run_params(checked), run_tags(checked)
    with tracker.run(experiment=checked.experiment, run_name=run_name, tags=tags) as run:
        result = record_training(
            run, checked, run_name=run_name, params=params, tags=tags, progress=progress, fitting=fitting
        )
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
    fitting: FitAhead | None = None,
) -> TrainResult:
    """Everything a standard run holds, logged into the already started `run` (tune refits into its parent).
    `fitting`: the final model, already being fitted."""
    spec, cfg, split = checked.spec, checked.config, checked.split
    run.log_params(params)
    run.log_text(resolved_yaml(cfg), "config/resolved.yaml")
    run.log_text(requirements_txt(), "env/requirements.txt")
    if checked.validation is not None:
        run.log_text(checked.validation.to_json(), "data_validation.json")
    log_datasets(run, checked)

    task, classes = checked.dataset.task, checked.dataset.classes
    metrics: dict[str, dict[str, float]] = {}
    fold_run_ids: list[str] = []
    if cfg.cv_folds >= 2:
        metrics["cv"], fold_run_ids = cross_validate(
            run, lambda: new_pipeline(checked), split.X_train, split.y_train, task=task, classes=classes,
            folds=cfg.cv_folds, random_state=cfg.random_state, custom_metrics=named_metrics(checked),
            progress=progress,
        )  # fmt: skip
        run.log_metrics(prefixed("cv", metrics["cv"]))

    if fitting is not None:
        if run.stores_artifacts:
            import_matplotlib()  # while the fit runs
        pipeline = fitting.result()
    else:
        pipeline = new_pipeline(checked)
        _report_epochs(final_estimator(pipeline), run, progress)
        pipeline.fit(split.X_train, split.y_train)
    artifact = model_artifact(pipeline, checked)
    run.save_model_ahead(artifact)  # while the model is evaluated
    evaluation = evaluate_fitted(
        pipeline, split.X_test, split.y_test, task=task, classes=classes, model_name=spec.name,
        thresholds=cfg.thresholds, random_state=cfg.random_state, train_rows=train_scoring_rows(checked),
        custom_metrics=named_metrics(checked), with_artifacts=run.stores_artifacts, slices=cfg.slices, explain=cfg.explain,
    )  # fmt: skip
    metrics.update(evaluation.metrics)
    log_evaluation(run, evaluation)
    model_uri = run.log_model(artifact)
    if spec.native_flavor:
        run.log_model(native_artifact(pipeline, checked))
    log_report(
        run, run_name=run_name, experiment=checked.experiment, params={**params, **evaluation.evidence.params},
        metrics=metrics, tags=tags, images=evaluation.images, slices=evaluation.evidence.texts.get(SLICES_FILE),
    )  # fmt: skip
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
        model_uri=model_uri,
        ui_url=run.ui_url,
        fold_run_ids=fold_run_ids,
        X_test=split.X_test,
        y_test=split.y_test,
        params={**params, **evaluation.evidence.params},
        tags=dict(tags),
        images=evaluation.images,
        predictions=evaluation.predictions,
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


def run_name_stem(model_type: str) -> str:
    """A family's name, or a factory's function name (`src/models.py:make` -> `make`)."""
    return model_type.rpartition(":")[2]


def new_pipeline(checked: CheckedInputs):
    """A fresh, unfitted model: a Pipeline of the user's as it is; any other estimator behind tabtrack's input
    step and preprocessing."""
    from sklearn.base import clone

    if is_pipeline(checked.estimator):
        return clone(checked.estimator)
    return build_pipeline(
        clone(checked.estimator),
        numeric=checked.dataset.numeric_columns,
        categorical=checked.dataset.categorical_columns,
        columns=checked.split.X_train.columns,
    )


class FitAhead:
    """The final model fitted in a worker thread while the calling thread starts MLflow and its run: in a fresh
    process (the CLI), MLflow's import and store take seconds, and a model's fit runs mostly in native code
    that releases the GIL. The run's records and their order are the same; `result()` re-raises the fit's
    exception inside the run, so a failed fit still fails its run.

    Only for families that declare `fits_beside_python`, without CV (folds are child runs, so the run comes
    first). The thread is a daemon: a command that fails before its run starts exits without waiting for the
    fit."""

    def __init__(self, checked: CheckedInputs) -> None:
        self.pipeline = new_pipeline(checked)
        self._error: BaseException | None = None
        split = checked.split
        self._thread = threading.Thread(
            target=self._fit, args=(split.X_train, split.y_train), name="tabtrack-fit", daemon=True
        )
        self._thread.start()

    @staticmethod
    def possible(checked: CheckedInputs) -> bool:
        return checked.spec.fits_beside_python and checked.config.cv_folds < 2

    def _fit(self, X, y) -> None:
        try:
            self.pipeline.fit(X, y)
        except BaseException as exc:  # re-raised by result(), in the run
            self._error = exc

    def result(self):
        """The fitted pipeline, once the fit is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.pipeline


def named_metrics(checked: CheckedInputs) -> list[NamedMetric]:
    """The config's custom metrics, each logged under its function's name."""
    return [(metric.name, metric) for metric in checked.custom_metrics]


def train_scoring_rows(checked: CheckedInputs) -> tuple[pd.DataFrame, pd.Series]:
    """The training rows train_* metrics are computed on (config `train_metrics_rows`)."""
    split = checked.split
    return scoring_rows(
        split.X_train, split.y_train, limit=checked.config.train_metrics_rows, random_state=checked.config.random_state
    )


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
