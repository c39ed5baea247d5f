"""The `train` door: one data file and config in, one complete, standard MLflow run out.

`train` checks everything first (core/checks.py: no run, not even a store, exists if an input is bad), then opens
a run and records through the same Recorder the own-code door uses: the settings, the data files and splits,
cross-validation, the fit, and the evaluation of the fitted pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tabtrack.config import RunConfig, deep_merge, drop_none, resolve_config
from tabtrack.core.checks import CheckedInputs, check_training
from tabtrack.core.recorder import Progress, Recorder, apply_seed, model_facts
from tabtrack.core.run_tags import standard_tags
from tabtrack.evaluate.fitted_model import NamedMetric
from tabtrack.evaluate.importance import final_estimator
from tabtrack.evaluate.metrics import flatten
from tabtrack.evaluate.plots import import_matplotlib
from tabtrack.models.own import is_pipeline, own_spec
from tabtrack.models.pipeline import build_pipeline
from tabtrack.tracking import Tracker, make_tracker

log = logging.getLogger(__name__)


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
    fold_metrics: list[dict[str, float]] = field(default_factory=list)  # each CV fold's scores, in fold order
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
        return flatten(self.metrics)

    def _repr_html_(self) -> str:
        """Jupyter: the metric table and the main plots inline."""
        from tabtrack.pages.run_page import notebook_html

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
    intervals: float | None = None,
) -> TrainResult:
    """Train one model and record it as one standard MLflow run.

    `data` is a CSV/Parquet file or a DataFrame (its lineage is then a digest of the frame). `model` is a
    family name, your own factory `"path/to/file.py:function"`, or an estimator or Pipeline object (a
    Pipeline of yours is trained as it is, with no tabtrack preprocessing added). `log_params` are recorded
    as given; `code_paths` ship with the model. `fit_ahead` (what `tabtrack train` does) fits a family's
    model in a worker thread while MLflow starts, where it can (see FitAhead); it is off by default because
    a new thread does not see settings the caller made for its own thread (threadpoolctl's limits,
    `sklearn.config_context`, joblib's `parallel_config`). `intervals=0.9` calibrates conformal prediction
    intervals (regression) or sets (classification) meant to hold for 90% of rows, on `calibration_size` (0.2) of
    the training split held out of the fit; the run logs their coverage on the test split and `model_intervals`.

    Example:
        >>> result = tabtrack.train("examples/breast_cancer.csv", target="target",
        ...                         model="hist_gradient_boosting", params={"max_depth": 4})
        >>> result.metrics["test"]["roc_auc"]
    """
    frame = data if isinstance(data, pd.DataFrame) else None
    obj = model if model is not None and not isinstance(model, str) else None
    resolved = build_config(
        None if frame is not None else data, config=config, overrides=overrides,
        model=own_spec(obj).name if obj is not None else model, params=params, target=target, task=task,
        cv_folds=cv, test_size=test_size, random_state=random_state, experiment=experiment, device=device, tags=tags,
        test_data=test_data, run_name=run_name, extra_params=log_params, code_paths=code_paths, intervals=intervals,
    )  # fmt: skip
    checked = check_training(resolved, frame=frame, model=obj)
    return run_training(
        checked, tracker=tracker, tracking_uri=tracking_uri, track=track, progress=progress, offline=offline,
        fit_ahead=fit_ahead,
    )  # fmt: skip


def build_config(
    data: str | Path | None = None,
    *,
    config: str | Path | RunConfig | None = None,
    overrides: Iterable[str] = (),
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunConfig:
    """Config file (or a RunConfig) < keyword options < `--set` overrides. `options` are RunConfig keys (`target`,
    `cv_folds`, `random_state`, `tags`, ...); None means "not given". `model` and `params` are the family and its
    parameters."""
    unknown = sorted(set(options) - set(RunConfig.model_fields))
    if unknown:
        raise TypeError(f"build_config() got unknown option(s) {unknown}")
    base = config.model_dump() if isinstance(config, RunConfig) else {}
    given = {
        **options,
        "data": str(data) if data is not None else None,
        "model": {"type": model, "params": dict(params) if params else None},
    }
    for key in ("test_data",):
        given[key] = str(given[key]) if given.get(key) is not None else None
    for key in ("tags", "extra_params"):
        given[key] = dict(given[key]) if given.get(key) else None
    given["code_paths"] = [str(p) for p in given.get("code_paths") or ()] or None
    return resolve_config(
        file=None if isinstance(config, RunConfig) else config,
        options=deep_merge(base, drop_none(given)),  # a RunConfig passed as `config=` is the base layer
        overrides=overrides,
    )


def run_training(
    checked: CheckedInputs,
    *,
    tracker: Tracker | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    progress: Progress | None = None,
    offline: bool = False,
    fit_ahead: bool = False,
    kind: str = "train",
) -> TrainResult:
    """Open a run for checked inputs and record one training in it (`tracker`: a compare parent's nested one)."""
    cfg = checked.config
    run_name = cfg.run_name or f"{run_name_stem(checked.spec.name)}_{datetime.now():%Y%m%d_%H%M%S}"
    apply_seed(cfg.random_state)
    fitting = FitAhead(checked) if fit_ahead and track and tracker is None and FitAhead.possible(checked) else None
    tracker = tracker or make_tracker(track=track, tracking_uri=tracking_uri, offline=offline)
    tags = training_tags(checked, kind=kind)
    with tracker.run(experiment=checked.experiment, run_name=run_name, tags=tags) as run:
        recorder = Recorder(run, run_name=run_name, experiment=checked.experiment, tags=tags)
        result = record_training(recorder, checked, progress=progress, fitting=fitting)
    result.offline_bundle = run.offline_bundle  # known only once the run has ended (it may fail over late)
    if result.offline_bundle:
        result.ui_url = None
    return result


def training_tags(checked: CheckedInputs, *, kind: str) -> dict[str, str]:
    data = checked.data
    return standard_tags(
        kind=kind, files=[data.fingerprint], test_file=data.test_fingerprint, user_tags=checked.config.tags
    )


def record_training(
    recorder: Recorder, checked: CheckedInputs, *, progress: Progress | None = None, fitting: FitAhead | None = None
) -> TrainResult:
    """Everything a standard training run holds, recorded into an open run (tune refits into its parent).
    `fitting`: the final model, already being fitted."""
    cfg, data, split = checked.config, checked.data, checked.split
    task, classes = data.dataset.task, data.dataset.classes
    recorder.add_params(training_settings(checked))
    n_train = len(split.X_train)
    facts = model_facts(  # before the fit, so that a run whose fit fails still shows what it was to be
        checked.estimator, split.X_test, task=task, classes=classes, model_name=checked.spec.name, target=cfg.target,
        n_train=n_train, n_scored=n_train if cfg.train_metrics_rows is None else min(cfg.train_metrics_rows, n_train),
    )  # fmt: skip
    recorder.add_params(facts)
    recorder.record_settings(cfg.model_dump(mode="json"))
    if data.validation is not None:
        recorder.record_validation(data.validation)
    recorder.record_files(data.files)
    recorder.record_splits(
        (split.X_train, split.y_train), (split.X_test, split.y_test), target=cfg.target, data_file=data.fingerprint,
        test_file=data.test_fingerprint,
    )  # fmt: skip

    fold_run_ids: list[str] = []
    if cfg.cv_folds >= 2:
        _, fold_run_ids = recorder.cross_validate(
            lambda: new_pipeline(checked), split.X_train, split.y_train, task=task, classes=classes,
            folds=cfg.cv_folds, random_state=cfg.random_state, custom_metrics=named_metrics(checked),
            progress=progress,
        )  # fmt: skip
    if fitting is not None:
        if recorder.stores_artifacts:
            import_matplotlib()  # while the fit runs
        pipeline = fitting.result()
    else:
        pipeline = new_pipeline(checked)
        _report_epochs(final_estimator(pipeline), recorder.run, progress)
        pipeline.fit(split.X_train, split.y_train)
    calibration = None
    if cfg.intervals:
        from tabtrack.evaluate.conformal import calibrate

        calibration = calibrate(pipeline, split.X_calibration, split.y_calibration, task=task, classes=classes,
                                level=cfg.intervals)  # fmt: skip
    evaluation, model_uri = recorder.evaluate(
        pipeline, split.X_test, split.y_test, packaging=checked.packaging, task=task, classes=classes,
        model_name=checked.spec.name, train_rows=(split.X_train, split.y_train), random_state=cfg.random_state,
        thresholds=cfg.thresholds, train_metrics_rows=cfg.train_metrics_rows, target=cfg.target,
        custom_metrics=named_metrics(checked), slices=cfg.slices, explain=cfg.explain,
        reference_rows=cfg.monitoring.reference_sample_rows, calibration=calibration, onnx=cfg.onnx,
    )  # fmt: skip
    return TrainResult(
        run_id=recorder.run.run_id,
        experiment=checked.experiment,
        run_name=recorder.run_name,
        task=task,
        model=checked.spec.name,
        metrics=dict(recorder.metrics),
        pipeline=pipeline,
        config=cfg,
        classes=classes,
        model_uri=model_uri,
        ui_url=recorder.run.ui_url,
        fold_run_ids=fold_run_ids,
        fold_metrics=recorder.fold_metrics,
        X_test=split.X_test,
        y_test=split.y_test,
        params=dict(recorder.params),
        tags=dict(recorder.tags),
        images=dict(recorder.images),
        predictions=evaluation.predictions,
    )


def training_settings(checked: CheckedInputs) -> dict[str, Any]:
    """The params only a config-driven run has: how the data was split and scored, and the user's own params."""
    cfg, data, split = checked.config, checked.data, checked.split
    settings: dict[str, Any] = {
        "target": cfg.target,
        "test_size": cfg.test_size,
        "random_state": cfg.random_state,
        "cv_folds": cfg.cv_folds,
    }
    if data.dataset.dropped_target_rows:
        settings["n_dropped_target_rows"] = data.dataset.dropped_target_rows
    if checked.device:
        settings["device"] = checked.device
    if cfg.test_data:  # pre-split: the share actually held out, and where it came from
        settings["test_size"] = round(len(split.X_test) / (len(split.X_train) + len(split.X_test)), 4)
        settings["test_data"] = cfg.test_data
    if cfg.drop_columns:
        settings["drop_columns"] = ",".join(cfg.drop_columns)
    if cfg.intervals:
        settings["calibration_size"] = cfg.calibration_size
    return {**settings, **cfg.extra_params}


def write_metrics_file(result: TrainResult, path: str | Path) -> None:
    """Metrics by split as JSON, the shape `dvc metrics show` reads."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")


# -- training pieces --------------------------------------------------------------------------
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
    that releases the GIL. The run's records are the same; `result()` re-raises the fit's exception inside the
    run, so a failed fit still fails its run, and joins the thread (so no thread is left when the model is
    saved, see tabtrack/forked.py).

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
