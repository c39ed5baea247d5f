"""The MLflow adapter: the one place that logs to MLflow.

Run lifecycles use MLflow's fluent stack (so `log_model` links models to the right run);
params, metrics and tags are buffered and sent with `log_batch`, not one call per value.
When a tracking server stops answering mid-run, the run tree carries on into an offline bundle
(tracking/offline.py) that `tabtrack sync` later completes; nothing logged is lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tabtrack import settings
from tabtrack.errors import TrackingError
from tabtrack.redact import redact_uri
from tabtrack.tracking.base import ModelArtifact, Tracker
from tabtrack.tracking.mlflow_errors import refusal, retry_locked, unreachable
from tabtrack.tracking.mlflow_io import (
    MAX_METRICS,
    MAX_PARAM_LENGTH,
    MAX_PARAMS,
    MAX_TAGS,
    PARENT_TAG,
    SavedAhead,
    dataset_entity,
    log_model,
)
from tabtrack.tracking.offline import OfflineTracker
from tabtrack.tracking.store import is_local_store, resolve_tracking_uri, run_url

log = logging.getLogger(__name__)


def _failover(method):
    """Run `method` against the server; once the server is unreachable, this run (and its parents)
    continue in an offline bundle, and every later call goes there."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._offline is None:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if not (self.remote and unreachable(exc)):
                    raise
                self._go_offline(exc)
        return getattr(self._offline, method.__name__)(*args, **kwargs)

    return wrapper


class MlflowTracker(Tracker):
    def __init__(self, tracking_uri: str | None = None, *, _parent: MlflowTracker | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.remote = not is_local_store(self.tracking_uri)
        if self.remote:
            settings.defaults(settings.MLFLOW_HTTP_RETRIES)  # a dead server reported in ~7 s, not minutes
        self._parent = _parent
        self._client = _parent._client if _parent else MlflowClient(self.tracking_uri)
        self._params: dict[str, str] = {}
        self._metrics: list[Metric] = []
        self._tags: dict[str, str] = {}
        self.experiment_id = _parent.experiment_id if _parent else None
        self._experiment_name: str | None = _parent._experiment_name if _parent else None
        self._run_name: str | None = None
        self._offline = None  # an OfflineTracker once the server stopped answering
        self._model_id: str | None = None  # the run's `model`: metrics logged after it are linked to it
        self._ahead: list[SavedAhead] = []
        # Read now: a bad value is an error before training, not when the model is logged after it.
        self._upload_notice = settings.seconds(settings.UPLOAD_NOTICE) if self.remote else None

    # -- lifecycle --------------------------------------------------------------------
    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        mlflow.set_tracking_uri(self.tracking_uri)
        self._run_name = run_name
        if self._parent is not None:  # a nested() tracker: a child of the parent's run, in its experiment
            self._parent.flush()
            if self._parent._offline is not None:
                self._offline = self._parent._offline.nested()
                self._offline._start(experiment=experiment, run_name=run_name, tags=tags)
                return
            self._begin(run_name, {**tags, PARENT_TAG: self._parent.run_id}, nested=True)
            return
        self._experiment_name = experiment
        outer = mlflow.active_run()  # the user's own run, or an enclosing one: this run becomes its child
        try:
            if outer is not None:
                self.experiment_id = outer.info.experiment_id
                self._experiment_name = self._client.get_experiment(self.experiment_id).name
                self._begin(run_name, {**tags, PARENT_TAG: outer.info.run_id}, nested=True)
                return
            self.experiment_id = self._experiment_id(experiment)
            self._begin(run_name, tags, nested=False)
        except TrackingError as exc:
            if not (self.remote and unreachable(exc)):
                raise
            self._start_offline(experiment, run_name, tags, exc)

    def _start_offline(self, experiment: str, run_name: str, tags: dict[str, str], exc: BaseException) -> None:
        self._offline = OfflineTracker(tracking_uri=self.tracking_uri)
        self._offline._start(experiment=experiment, run_name=run_name, tags=tags)
        self.run_id = self._offline.run_id
        log.warning(
            "tracking server %s is unreachable (%s); recording offline in %s. Run `tabtrack sync` when it is back.",
            redact_uri(self.tracking_uri),
            type(exc.__cause__ or exc).__name__,
            self._offline.bundle,
        )

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
        if self._offline is None:
            child = MlflowTracker(self.tracking_uri, _parent=self)
            child._run_name = run_name
            try:
                child._begin(run_name, {**tags, PARENT_TAG: self.run_id}, nested=True)
                return child
            except TrackingError as exc:
                if not (self.remote and unreachable(exc)):
                    raise
                self._go_offline(exc)
        return self._offline._new_child(run_name, tags)

    def _begin(self, run_name: str, tags: dict[str, str], *, nested: bool) -> None:
        try:
            run = retry_locked(
                mlflow.start_run, experiment_id=self.experiment_id, run_name=run_name, tags=tags, nested=nested
            )
        except MlflowException as exc:
            raise TrackingError(
                f"could not start an MLflow run at {redact_uri(self.tracking_uri)}: {refusal(exc)}"
            ) from exc
        self.run_id = run.info.run_id

    def _end(self, status: str) -> None:
        while self._ahead:  # saved for a log_model that never came (the run failed first)
            self._ahead.pop().discard()
        try:
            self.flush()
        finally:
            if self._offline is None:
                try:
                    self._end_online(status)
                except Exception as exc:
                    if not (self.remote and unreachable(exc)):
                        raise
                    self._go_offline(exc)
            if self._offline is not None:
                self._offline._end(status)

    def _end_online(self, status: str) -> None:
        active = mlflow.active_run()
        # A child whose start an interrupt cut short (in the store and on MLflow's stack, but its tracker never got
        # its id, so nothing ends it) ends with its parent rather than staying RUNNING.
        while (
            active is not None and active.info.run_id != self.run_id and active.data.tags.get(PARENT_TAG) == self.run_id
        ):
            retry_locked(mlflow.end_run, status=status)
            active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            retry_locked(mlflow.end_run, status=status)
        else:  # not on top of the fluent stack (should not happen): end it directly
            retry_locked(self._client.set_terminated, self.run_id, status=status)

    def _go_offline(self, exc: BaseException) -> None:
        """Continue this run in an offline bundle that names the server's run, so sync completes it."""
        if self._offline is not None:
            return
        parent = self._parent
        if parent is not None:
            parent._go_offline(exc)
        offline = OfflineTracker(tracking_uri=self.tracking_uri, remote_run_id=self.run_id)
        offline.adopt(
            experiment=self._experiment_name or "",
            run_name=self._run_name or "",
            parent=parent._offline if parent is not None else None,
        )
        # What the server never received goes into the bundle, with the original timestamps.
        offline.log_params(self._params)
        offline.set_tags(self._tags)
        offline.log_metric_records(
            [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in self._metrics]
        )
        self._params, self._tags, self._metrics = {}, {}, []
        self._offline = offline
        _forget_fluent_run(self.run_id)
        if parent is None:
            log.warning(
                "tracking server %s stopped answering (%s); the run continues offline in %s. "
                "Run `tabtrack sync` when it is back.",
                redact_uri(self.tracking_uri),
                type(exc).__name__,
                offline.bundle,
            )

    @property
    def offline_bundle(self) -> str | None:
        return self._offline.offline_bundle if self._offline is not None else None

    def _experiment_id(self, name: str) -> str:
        try:
            experiment = retry_locked(self._client.get_experiment_by_name, name)
            if experiment is None:
                try:
                    return retry_locked(self._client.create_experiment, name)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it first
                        raise
                    experiment = self._client.get_experiment_by_name(name)
        except MlflowException as exc:
            raise TrackingError(
                f"MLflow store {redact_uri(self.tracking_uri)} refused the request: {refusal(exc)}"
            ) from exc
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} was deleted; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}) or choose another --experiment."
            )
        return experiment.experiment_id

    # -- buffered values --------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._offline is not None:
            self._offline.log_params({k: _param_text(v) for k, v in params.items()})
            return
        for key, value in params.items():
            self._params[key] = _param_text(value)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        if self._offline is not None:
            self._offline.log_metrics(metrics, step=step)
            return
        now = int(time.time() * 1000)
        # MLflow links the run's metrics to a model when it is logged; later ones are linked here.
        self._metrics.extend(
            Metric(key, float(value), now, step or 0, model_id=self._model_id) for key, value in metrics.items()
        )
        if len(self._metrics) >= MAX_METRICS:
            self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._offline is not None:
            self._offline.set_tags(tags)
            return
        self._tags.update({key: str(value) for key, value in tags.items()})

    @_failover
    def flush(self) -> None:
        # Each buffer is cleared only after the server took it, so a failure leaves it for the bundle.
        # (A chunk the server took before a later one failed may be re-sent: sync skips duplicates.)
        while self._params:
            chunk = dict(list(self._params.items())[:MAX_PARAMS])
            retry_locked(self._client.log_batch, self.run_id, params=[Param(k, v) for k, v in chunk.items()])
            for key in chunk:
                del self._params[key]
        while self._tags:
            chunk = dict(list(self._tags.items())[:MAX_TAGS])
            retry_locked(self._client.log_batch, self.run_id, tags=[RunTag(k, v) for k, v in chunk.items()])
            for key in chunk:
                del self._tags[key]
        while self._metrics:
            chunk = self._metrics[:MAX_METRICS]
            retry_locked(self._client.log_batch, self.run_id, metrics=chunk)
            del self._metrics[: len(chunk)]

    # -- artifacts --------------------------------------------------------------------
    @_failover
    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    @_failover
    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self._client.log_artifact(self.run_id, str(local), artifact_path=folder or None)

    @_failover
    def log_dataset(
        self, frame: Any, *, context: str, source: str, name: str, target: str | None, digest: str | None = None
    ) -> None:
        from mlflow.entities import DatasetInput, InputTag

        entity = DatasetInput(
            dataset_entity(frame, source=source, name=name, target=target, digest=digest),
            tags=[InputTag("mlflow.data.context", context)],
        )
        retry_locked(self._client.log_inputs, self.run_id, datasets=[entity])

    def save_model_ahead(self, artifact: ModelArtifact) -> None:
        if self._offline is None and SavedAhead.possible(artifact):
            self._ahead.append(SavedAhead(artifact))

    @_failover
    def log_model(self, artifact: ModelArtifact) -> str | None:
        ahead = next((saving for saving in self._ahead if saving.artifact is artifact), None)
        try:
            return self._log_model(artifact, ahead)
        finally:
            if ahead is not None:
                self._ahead.remove(ahead)
                ahead.discard()

    def _log_model(self, artifact: ModelArtifact, ahead: SavedAhead | None) -> str | None:
        self.flush()
        if self._offline is not None:  # the flush just found the server gone
            return self._offline.log_model(artifact)
        with _reported_while_slow(
            f"logging the {artifact.name} to {redact_uri(self.tracking_uri)}", self._upload_notice
        ):
            info = log_model(artifact, ahead.folder() if ahead is not None else None)
        if artifact.name == "model":
            self._model_id = info.model_id
        return info.model_uri

    @property
    def ui_url(self) -> str | None:
        if self._offline is not None or self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)


@contextlib.contextmanager
def _reported_while_slow(what: str, every: float | None):
    """Say every `every` seconds (never if None) that `what` is still going: a large model takes minutes to
    reach a remote store, and a silent terminal looks hung."""
    if every is None:
        yield
        return
    done, started = threading.Event(), time.monotonic()

    def report() -> None:
        while not done.wait(every):
            log.warning("still %s: %.0f s so far", what, time.monotonic() - started)

    reporter = threading.Thread(target=report, name="tabtrack-upload-notice", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join()


def _forget_fluent_run(run_id: str | None) -> None:
    """Drop a run from MLflow's fluent stack without contacting the (unreachable) server.

    Private: `mlflow.end_run()` is the only public way off the stack, and it pops the run only after the
    server took its end status, which an unreachable server never does. Without this, every later
    `mlflow.start_run` in the process would nest under a dead run. tests/test_offline.py checks the stack
    is still where this looks for it."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    stack[:] = [run for run in stack if run.info.run_id != run_id]


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
