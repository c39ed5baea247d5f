"""The one recorder: what a standard run holds, whichever door made it.

`tabtrack train` (core/training.py: tabtrack's pipeline on a data file) and `start_run` + `Run.evaluate`
(core/run.py: the user's fitted model) both record through `Recorder`, so their runs carry the same tags, params,
metrics and artifacts: the standard tags (`standard_tags`), the settings and package versions, the data files and
splits as MLflow datasets, cross-validation as child runs, the evaluation (metrics, reports, plots, test
predictions), the model with its signature, requirements and trusted types (core/packaging.py), and report.html.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.core.packaging import Packaging, native_artifact, onnx_artifact
from tabtrack.data.fingerprint import FRAME_SOURCE, DataFingerprint
from tabtrack.data.prepare import feature_kinds
from tabtrack.errors import TabtrackError
from tabtrack.evaluate.fitted_model import Evaluation, NamedMetric, evaluate_fitted_model, score_split, scoring_rows
from tabtrack.evaluate.metrics import aggregate_folds, flatten, prefixed
from tabtrack.evaluate.slices import SLICES_FILE
from tabtrack.lineage import requirements_txt
from tabtrack.models.spec import hyperparameters
from tabtrack.redact import redact
from tabtrack.tracking.base import Tracker

log = logging.getLogger(__name__)

# Called as progress(stage, done, total), e.g. ("fold", 2, 5).
Progress = Callable[[str, int, int], None]
VALIDATION_FILE = "data_validation.json"


def apply_seed(seed: int) -> None:
    """The seed for `random`, numpy's global generator and, when the code uses it, torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def model_facts(
    model: Any,
    X_test: Any,
    *,
    task: str,
    classes: Sequence | None,
    model_name: str,
    n_train: int | None = None,
    n_scored: int | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """The params every run records about its model and split: the family (or the model's class), the task, the
    target, the sizes, how the inputs split into numeric and categorical columns, and the hyperparameters.
    `n_scored`: the training rows the train_* metrics score, recorded when fewer than `n_train`."""
    if hasattr(X_test, "columns"):
        numeric, categorical = feature_kinds(X_test)
    else:
        numeric, categorical = [None] * (X_test.shape[1] if np.ndim(X_test) > 1 else 1), []
    facts: dict[str, Any] = {
        **hyperparameters(model),
        "model_type": model_name,
        "task": task,
        "n_features": len(numeric) + len(categorical),
        "n_test_samples": len(X_test),
        "n_numeric_features": len(numeric),
        "n_categorical_features": len(categorical),
    }
    if target:
        facts["target"] = target
    if n_train is not None:
        facts["n_train_samples"] = n_train
        if n_scored is not None and n_scored < n_train:
            facts["train_metrics_rows"] = n_scored
    if classes is not None:
        facts["n_classes"] = len(classes)
    return facts


class Recorder:
    """A standard run being recorded into `run`, an open Tracker. It keeps what was recorded (params, tags,
    metrics by split, plots) for report.html and for what the doors return."""

    def __init__(self, run: Tracker, *, run_name: str, experiment: str, tags: Mapping[str, str]) -> None:
        self.run = run
        self.run_name, self.experiment = run_name, experiment
        self.tags: dict[str, str] = dict(tags)
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.fold_metrics: list[dict[str, float]] = []  # each CV fold's scores, once cross_validate ran
        self.images: dict[str, bytes] = {}
        self.slices_csv: str | None = None

    @property
    def stores_artifacts(self) -> bool:
        return self.run.stores_artifacts

    # -- values ---------------------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """The user's params, secret-looking keys masked; as in MLflow, a param keeps its first value."""
        params = redact(dict(params))
        self.params.update(params)
        self.run.log_params(params)

    def add_params(self, params: Mapping[str, Any]) -> None:
        """The standard's params (settings, model facts, evidence), secret-looking keys masked; a param already
        recorded (by the user, or earlier in the run) is left as it is."""
        new = {k: v for k, v in redact(dict(params)).items() if k not in self.params}
        self.params.update(new)
        self.run.log_params(new)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.run.log_metrics(metrics, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        tags = redact({str(k): str(v) for k, v in tags.items()})
        self.tags.update(tags)
        self.run.set_tags(tags)

    # -- the standard ---------------------------------------------------------------------------------------------
    def record_settings(self, settings_: Mapping[str, Any]) -> None:
        """`config/resolved.yaml` (what decided the run, secrets masked) and `env/requirements.txt`."""
        import yaml

        self.run.log_text(yaml.safe_dump(redact(dict(settings_)), sort_keys=False), "config/resolved.yaml")
        self.run.log_text(requirements_txt(), "env/requirements.txt")

    def record_validation(self, report: Any) -> None:
        """The data checks' findings as data_validation.json and their warning count as a tag."""
        self.set_tags({"data.validation_warnings": str(len(report.warnings))})
        self.run.log_text(report.to_json(), VALIDATION_FILE)

    def record_files(self, files: Sequence[tuple[Path, DataFingerprint]]) -> None:
        """Each data file as an MLflow dataset input (context `source`): its schema from the first rows, its
        sha256 as the digest."""
        from tabtrack.data.load import read_head

        if not self.stores_artifacts:  # a run that records nothing
            return
        for path, fp in files:
            source = Path(fp.path).as_uri() if Path(fp.path).is_absolute() else fp.path
            self.run.log_dataset(
                read_head(path), context="source", source=source, name=Path(fp.path).stem, target=None,
                digest=fp.sha256[:8],
            )  # fmt: skip

    def record_splits(
        self,
        train_rows: tuple[Any, Any] | None,
        test_rows: tuple[Any, Any],
        *,
        target: str | None,
        data_file: DataFingerprint | None,
        test_file: DataFingerprint | None = None,
    ) -> None:
        """The training and test rows as MLflow dataset inputs (their digests), named after the file they came from
        (`{stem}_train`, `{stem}_test`; a pre-split test file by its own name) and with it as their source."""
        if not self.stores_artifacts:  # a run that records nothing
            return
        for context, rows, fp in (("training", train_rows, data_file), ("test", test_rows, test_file or data_file)):
            if rows is None or not hasattr(rows[0], "columns"):
                continue
            path = fp.path if fp is not None else FRAME_SOURCE
            name = Path(path).stem if test_file else f"{Path(path).stem}_{'train' if context == 'training' else 'test'}"
            X, y = rows
            column = target if target and target not in X.columns else _free_name(X.columns)
            self.run.log_dataset(
                X.assign(**{column: np.asarray(y)}), context=context, target=column, name=name,
                source=Path(path).as_uri() if Path(path).is_absolute() else path,
            )  # fmt: skip

    def record_row_checks(self, train_rows: tuple[Any, Any] | None, test_rows: tuple[Any, Any], *, target: str | None):
        """The data checks `tabtrack train` runs on its file, run on the rows a model was evaluated on (frames
        only): the findings are recorded as data_validation.json and shown as warnings. The model is trained
        already, so nothing is refused."""
        from tabtrack.data.validate import validate_frame

        parts = [rows for rows in (train_rows, test_rows) if rows is not None]
        if not all(isinstance(X, pd.DataFrame) for X, _ in parts):
            return
        column = target if target and target not in test_rows[0].columns else _free_name(test_rows[0].columns)
        frame = pd.concat([X.assign(**{column: np.asarray(y)}) for X, y in parts], ignore_index=True)
        report = validate_frame(frame, target=column, source="the evaluated rows")
        for finding in report.findings:
            log.warning("data validation: %s", finding.message)
        self.record_validation(report)

    def cross_validate(
        self,
        new_model: Callable[[], Any],
        X: Any,
        y: pd.Series,
        *,
        task: str,
        classes: Sequence | None,
        folds: int,
        random_state: int,
        custom_metrics: Sequence[NamedMetric] = (),
        progress: Progress | None = None,
    ) -> tuple[dict[str, float], list[str]]:
        """K folds (stratified for classification, shuffled with `random_state`), one child run `fold_{k}` each with
        its `cv_*` metrics; `cv_{name}_mean` / `_std` and `cv_folds` on this run. `new_model()` gives a fresh
        unfitted model for each fold. Returns the scores and the child run ids."""
        from sklearn.model_selection import KFold, StratifiedKFold

        splitter = (StratifiedKFold if task == "classification" else KFold)(
            n_splits=folds, shuffle=True, random_state=random_state
        )
        rows = X.iloc if hasattr(X, "iloc") else X
        fold_metrics: list[dict[str, float]] = []
        run_ids: list[str] = []
        for k, (fit_idx, val_idx) in enumerate(splitter.split(X, y), start=1):
            with self.run.child_run(f"fold_{k}") as child:
                child.log_params(
                    {"fold": k, "cv_folds": folds, "n_train_samples": len(fit_idx), "n_val_samples": len(val_idx)}
                )
                model = new_model().fit(rows[fit_idx], y.iloc[fit_idx])
                scores, _, _ = score_split(
                    model, rows[val_idx], y.iloc[val_idx], task=task, classes=classes, custom_metrics=custom_metrics
                )
                child.log_metrics(prefixed("cv", scores))
                fold_metrics.append(scores)
            if child.run_id:
                run_ids.append(child.run_id)
            if progress:
                progress("fold", k, folds)
        self.metrics["cv"] = aggregate_folds(fold_metrics)
        self.fold_metrics = fold_metrics
        self.add_params({"cv_folds": folds})
        self.log_metrics(prefixed("cv", self.metrics["cv"]))
        return self.metrics["cv"], run_ids

    def evaluate(
        self,
        model: Any,
        X_test: Any,
        y_test: pd.Series,
        *,
        packaging: Packaging,
        task: str,
        classes: Sequence | None,
        model_name: str,
        train_rows: tuple[Any, pd.Series] | None,
        random_state: int,
        thresholds: Sequence[float],
        train_metrics_rows: int | None,
        target: str | None = None,
        custom_metrics: Sequence[NamedMetric] = (),
        slices: Sequence[str] = (),
        explain: bool = False,
        reference_rows: int = 0,
        calibration: dict[str, Any] | None = None,
        onnx: bool = False,
    ) -> tuple[Evaluation, str | None]:
        """Everything a run records about a fitted model: `{train,test}_*` metrics (train ones on at most
        `train_metrics_rows` rows, a seeded sample), the evidence and plots, the test predictions, the reference
        `monitor` compares later rows with (profiled on those training rows, `reference_rows` raw ones kept), the
        model facts as params, the model itself (saved while the evaluation runs) and report.html. With a conformal
        `calibration` (evaluate/conformal.py), the test split's coverage and width, the calibration in the model's
        metadata, and `model_intervals`. With `onnx`, `model_onnx` (see `_log_portable`). Returns the evaluation and
        the model's URI (None where nothing is stored)."""
        from tabtrack_runtime.intervals import METADATA_KEY

        artifact = packaging.artifact(model, train_rows[0] if train_rows else X_test) if self.stores_artifacts else None
        if artifact is not None and calibration is not None:
            artifact.metadata = {METADATA_KEY: calibration}
        if artifact is not None:
            self.run.save_model_ahead(artifact)  # while the model is evaluated
        scored = (
            None
            if train_rows is None
            else scoring_rows(*train_rows, limit=train_metrics_rows, random_state=random_state)
        )
        evaluation = evaluate_fitted_model(
            model, X_test, y_test, task=task, classes=classes, model_name=model_name, thresholds=thresholds,
            random_state=random_state, train_rows=scored, custom_metrics=custom_metrics,
            with_artifacts=self.stores_artifacts, slices=slices, explain=explain,
        )  # fmt: skip
        if calibration is not None:
            from tabtrack.evaluate.conformal import coverage

            evaluation.metrics["test"].update(
                coverage(calibration, y_test, evaluation.y_pred, evaluation.proba, classes)
            )
            self.add_params({"intervals": calibration["level"], "n_calibration_samples": calibration["rows"],
                             "interval_method": calibration["method"]})  # fmt: skip
        self.metrics.update(evaluation.metrics)
        facts = model_facts(
            model, X_test, task=task, classes=classes, model_name=model_name, target=target,
            n_train=None if train_rows is None else len(train_rows[0]), n_scored=None if scored is None else len(scored[0]),
        )  # fmt: skip
        self.add_params(facts)
        self.add_params(evaluation.evidence.params)
        for split in ("train", "test"):
            if split in evaluation.metrics:
                self.log_metrics(prefixed(split, evaluation.metrics[split]))
        self.log_metrics(evaluation.evidence.run_metrics)
        self._call_out_too_good(evaluation, rows=len(y_test))
        for path, text in evaluation.evidence.texts.items():
            self.run.log_text(text, path)
        for path, png in evaluation.images.items():
            self.run.log_bytes(png, path)
        self.images.update(evaluation.images)
        self.slices_csv = evaluation.evidence.texts.get(SLICES_FILE)
        if self.stores_artifacts:
            profiled = scored[0] if scored is not None else X_test
            self._record_reference(profiled, evaluation, task=task, classes=classes, sample_rows=reference_rows,
                                   random_state=random_state)  # fmt: skip
        model_uri = self._log_model(artifact, example=train_rows[0] if train_rows else X_test) if artifact else None
        if model_uri is not None and calibration is not None:
            from tabtrack.core.packaging import interval_artifact

            self.run.log_model(interval_artifact(artifact, model_uri, calibration))
        if model_uri is not None and onnx:
            self._log_portable(model, X_test)
        self.record_report()
        return evaluation, model_uri

    def _call_out_too_good(self, evaluation: Evaluation, *, rows: int) -> None:
        """A test score at the edge is a warning on the terminal, a tag, and a box on the report and the card."""
        from tabtrack.evaluate.caveats import TOO_GOOD_TAG, too_good

        plots = evaluation.evidence.model_plots
        warning = too_good(evaluation.metrics["test"], rows, plots.importance if plots is not None else None)
        if warning:
            log.warning(warning)
            self.set_tags({TOO_GOOD_TAG: warning})

    def _record_reference(self, X: Any, evaluation: Evaluation, **options: Any) -> None:
        import json

        from tabtrack.data.profile import REFERENCE_FILE, reference_profile

        frame = X if hasattr(X, "columns") else pd.DataFrame(np.asarray(X))
        profile = reference_profile(frame, predictions=evaluation.y_pred, proba=evaluation.proba, **options)
        self.run.log_text(json.dumps(profile), REFERENCE_FILE)

    def _log_model(self, artifact: Any, *, example: Any) -> str | None:
        if artifact.trusted_types:
            self.set_tags({"tabtrack.trusted_types": ",".join(sorted(artifact.trusted_types))})
        uri = self.run.log_model(artifact)
        try:
            native = native_artifact(artifact.model, example, code_paths=artifact.code_paths)
        except Exception as exc:  # the bare algorithm is extra: the run keeps its `model`
            log.warning("model_native not logged: %s: %s", type(exc).__name__, exc)
            native = None
        if native is not None:
            self.run.log_model(native)
        return uri

    def _log_portable(self, model: Any, X_test: Any) -> None:
        """`model_onnx` and its check (`onnx_*` metrics); a model that cannot be converted or answers differently
        is one warning line and an `onnx.error` tag, the run otherwise unchanged."""
        try:
            artifact, check = onnx_artifact(model, X_test)
        except TabtrackError as exc:
            log.warning("model_onnx not logged (the run is otherwise complete): %s", exc)
            self.set_tags({"onnx.error": str(exc)})
            return
        self.run.log_model(artifact)
        self.log_metrics(check.as_metrics())

    def record_report(self) -> None:
        """`report.html`: the run's params, metrics by split, lineage, slices and plots in one standalone page."""
        if not self.stores_artifacts:
            return
        from tabtrack.pages.run_page import ReportData, render_report

        report = ReportData(
            run_id=self.run.run_id, run_name=self.run_name, experiment=self.experiment, status="FINISHED",
            params={k: str(v) for k, v in self.params.items()}, metrics=flatten(self.metrics), tags=dict(self.tags),
            images=dict(self.images), slices_csv=self.slices_csv,
        )  # fmt: skip
        self.run.log_text(render_report(report), "report.html")


def _free_name(columns: Sequence[str]) -> str:
    """A column name for the target that the inputs do not use."""
    name = "target"
    while name in set(map(str, columns)):
        name = f"_{name}"
    return name
