"""The MLflow adapter: the one place that logs to MLflow.

Run lifecycles use MLflow's fluent stack (so `log_model` links models to the right run);
params, metrics and tags are buffered and sent with `log_batch`, not one call per value.
"""

from __future__ import annotations

import importlib
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tabtrack.errors import TrackingError
from tabtrack.redact import redact_uri
from tabtrack.tracking.base import ModelArtifact, Tracker
from tabtrack.tracking.store import resolve_tracking_uri, run_url

# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_LENGTH = 6000
SCHEMA_SAMPLE_ROWS = 1000
PARENT_TAG = "mlflow.parentRunId"


class MlflowTracker(Tracker):
    def __init__(self, tracking_uri: str | None = None, *, _parent: MlflowTracker | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._parent = _parent
        self._client = _parent._client if _parent else MlflowClient(self.tracking_uri)
        self._params: dict[str, str] = {}
        self._metrics: list[Metric] = []
        self._tags: dict[str, str] = {}
        self.experiment_id = _parent.experiment_id if _parent else None

    # -- lifecycle --------------------------------------------------------------------
    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        mlflow.set_tracking_uri(self.tracking_uri)
        if self._parent is not None:  # a nested() tracker: a child of the parent's run, in its experiment
            self._parent.flush()
            self._begin(run_name, {**tags, PARENT_TAG: self._parent.run_id}, nested=True)
            return
        self.experiment_id = self._experiment_id(experiment)
        self._begin(run_name, tags, nested=False)

    def nested(self) -> Tracker:
        return MlflowTracker(self.tracking_uri, _parent=self)

    @classmethod
    def attach(cls, run_id: str, *, tracking_uri: str | None = None) -> MlflowTracker:
        """A tracker for a run another process started (a tune worker adds trial runs under it);
        it only adds children and values, and never ends the run."""
        tracker = cls(tracking_uri)
        mlflow.set_tracking_uri(tracker.tracking_uri)
        try:
            run = tracker._client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(
                f"run {run_id!r} not found at {redact_uri(tracker.tracking_uri)}: {exc.message}"
            ) from exc
        tracker.run_id, tracker.experiment_id = run_id, run.info.experiment_id
        return tracker

    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        self.flush()
        child = MlflowTracker(self.tracking_uri, _parent=self)
        child._begin(run_name, {**tags, PARENT_TAG: self.run_id}, nested=True)
        return child

    def _begin(self, run_name: str, tags: dict[str, str], *, nested: bool) -> None:
        try:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=tags, nested=nested)
        except MlflowException as exc:
            raise TrackingError(
                f"could not start an MLflow run at {redact_uri(self.tracking_uri)}: {exc.message}"
            ) from exc
        self.run_id = run.info.run_id

    def _end(self, status: str) -> None:
        try:
            self.flush()
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status=status)
            else:  # not on top of the fluent stack (should not happen): end it directly
                self._client.set_terminated(self.run_id, status=status)

    def _experiment_id(self, name: str) -> str:
        try:
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    return self._client.create_experiment(name)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it first
                        raise
                    experiment = self._client.get_experiment_by_name(name)
        except MlflowException as exc:
            raise TrackingError(
                f"MLflow store {redact_uri(self.tracking_uri)} refused the request: {exc.message}"
            ) from exc
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} was deleted; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}) or choose another --experiment."
            )
        return experiment.experiment_id

    # -- buffered values --------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self._params[key] = _param_text(value)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(key, float(value), now, step or 0) for key, value in metrics.items())
        if len(self._metrics) >= MAX_METRICS:
            self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({key: str(value) for key, value in tags.items()})

    def flush(self) -> None:
        params = [Param(k, v) for k, v in self._params.items()]
        tags = [RunTag(k, v) for k, v in self._tags.items()]
        metrics = self._metrics
        self._params, self._tags, self._metrics = {}, {}, []
        for chunk in _chunks(params, MAX_PARAMS):
            self._client.log_batch(self.run_id, params=chunk)
        for chunk in _chunks(tags, MAX_TAGS):
            self._client.log_batch(self.run_id, tags=chunk)
        for chunk in _chunks(metrics, MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=chunk)

    # -- artifacts --------------------------------------------------------------------
    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self._client.log_artifact(self.run_id, str(local), artifact_path=folder or None)

    def log_dataset(self, frame: Any, *, context: str, source: str, name: str, target: str | None) -> None:
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.models import infer_signature

        with warnings.catch_warnings():
            # MLflow registers two identical local-file source types and warns that it picked one.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=target)
            # The schema MLflow records is inferred from every row (0.3 s for 16k rows); the column
            # types are settled by a sample, so seed the cached property with the sample's schema.
            dataset.__dict__["schema"] = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
        entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
        self._client.log_inputs(self.run_id, datasets=[entity])

    def log_model(self, artifact: ModelArtifact) -> str | None:
        from mlflow.models import infer_signature

        self.flush()
        common = {
            "name": artifact.name,
            # Known requirements: skips MLflow's slow requirement inference (~6.7 s per call).
            "pip_requirements": artifact.pip_requirements,
        }
        if artifact.input_example is not None:
            common["signature"] = infer_signature(artifact.input_example, artifact.output_example)
            common["input_example"] = artifact.input_example
        if artifact.flavor == "sklearn":
            info = mlflow.sklearn.log_model(
                artifact.model,
                code_paths=artifact.code_paths or None,
                skops_trusted_types=artifact.trusted_types or None,
                **common,
            )
        elif artifact.flavor in ("xgboost", "lightgbm", "pytorch"):
            flavor = importlib.import_module(f"mlflow.{artifact.flavor}")
            info = flavor.log_model(artifact.model, **common)
        else:
            raise ValueError(f"no MLflow flavor {artifact.flavor!r}")
        return info.model_uri

    @property
    def ui_url(self) -> str | None:
        if self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
