"""Offline bundles: a run tree written to `.tabtrack/offline/<bundle>/` when the tracking server cannot be reached.

Layout of one bundle (one top-level run and its children):

    bundle.json                    tracking URI (redacted), host, pid: who writes it, for whom
    runs/<local_id>/run.json       experiment, run name, parent, start/end time, status, remote_run_id
    runs/<local_id>/params.json    {key: value}
    runs/<local_id>/tags.json      {key: value}
    runs/<local_id>/metrics.jsonl  one {"key", "value", "timestamp", "step"} per line, original timestamps
    runs/<local_id>/inputs.jsonl   one MLflow dataset entity (name, digest, source, schema, profile) + context
    runs/<local_id>/artifacts/     files exactly as they would have been logged
    runs/<local_id>/models/<name>/ the MLflow model, saved by its flavor; <name>.json says how to re-log it

`remote_run_id` is set when the run started on the server and lost it mid-run: `tabtrack sync` then
completes that run instead of creating another. `tabtrack sync` (tracking/sync.py) uploads bundles.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tabtrack.redact import redact_uri
from tabtrack.tracking.base import ModelArtifact, Tracker

OFFLINE_DIR = Path(".tabtrack") / "offline"


def offline_root(base: str | Path | None = None) -> Path:
    return Path(base) if base else Path.cwd() / OFFLINE_DIR


def _now_ms() -> int:
    return int(time.time() * 1000)


def write_json(path: Path, value: Any) -> None:
    """Atomic: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


class OfflineTracker(Tracker):
    """Writes a run (and its children) into a bundle instead of a tracking server."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        tracking_uri: str | None = None,
        _parent: OfflineTracker | None = None,
        remote_run_id: str | None = None,
    ) -> None:
        self.root = offline_root(root)
        self.tracking_uri = tracking_uri
        self._parent = _parent
        self.bundle: Path | None = _parent.bundle if _parent else None
        self.local_id = uuid.uuid4().hex
        self.run_id = f"offline-{self.local_id}"
        self.remote_run_id = remote_run_id
        self._experiment: str | None = None
        self._dir: Path | None = None
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------
    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        if self._parent is not None:  # a nested() tracker: a child of the parent's run, in its experiment
            self._open(self._parent._experiment or experiment, run_name, tags, parent=self._parent.local_id)
            return
        self._open(experiment, run_name, tags, parent=None)

    def _open(self, experiment: str, run_name: str, tags: dict[str, str], *, parent: str | None) -> None:
        if self.bundle is None:
            self.bundle = self.root / f"{time.strftime('%Y%m%d_%H%M%S')}_{self.local_id[:8]}"
            (self.bundle / "runs").mkdir(parents=True)
            write_json(
                self.bundle / "bundle.json",
                {
                    "tracking_uri": redact_uri(self.tracking_uri or ""),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "created": _now_ms(),
                },
            )
        self._experiment = experiment
        self._dir = self.bundle / "runs" / self.local_id
        (self._dir / "artifacts").mkdir(parents=True)
        write_json(
            self._dir / "run.json",
            {
                "local_id": self.local_id,
                "parent": parent,
                "experiment": experiment,
                "run_name": run_name,
                "start_time": _now_ms(),
                "end_time": None,
                "status": "RUNNING",
                "remote_run_id": self.remote_run_id,
            },
        )
        self.set_tags(tags)

    def nested(self) -> Tracker:
        return OfflineTracker(self.root, tracking_uri=self.tracking_uri, _parent=self)

    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        child = OfflineTracker(self.root, tracking_uri=self.tracking_uri, _parent=self)
        child._open(self._experiment or "", run_name, tags, parent=self.local_id)
        return child

    def adopt(self, *, experiment: str, run_name: str, parent: OfflineTracker | None) -> None:
        """Continue a run the server already holds (remote_run_id): used when the server fails mid-run."""
        if parent is not None:
            self._parent, self.bundle = parent, parent.bundle
        self._open(experiment, run_name, {}, parent=parent.local_id if parent else None)

    def _end(self, status: str) -> None:
        record = read_json(self._dir / "run.json")
        record.update(status=status, end_time=_now_ms())
        write_json(self._dir / "run.json", record)

    # -- values -------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.update({k: str(v) for k, v in params.items()})
        write_json(self._dir / "params.json", self._params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        now = _now_ms()
        with (self._dir / "metrics.jsonl").open("a") as handle:
            for key, value in metrics.items():
                handle.write(json.dumps({"key": key, "value": float(value), "timestamp": now, "step": step or 0}))
                handle.write("\n")

    def log_metric_records(self, records: list[dict[str, Any]]) -> None:
        """Metrics with their original timestamps (buffered values a failed server never received)."""
        with (self._dir / "metrics.jsonl").open("a") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})
        write_json(self._dir / "tags.json", self._tags)

    # -- artifacts ----------------------------------------------------------------------
    def log_text(self, text: str, artifact_file: str) -> None:
        self.log_bytes(text.encode("utf-8"), artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        path = self._dir / "artifacts" / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def log_dataset(
        self, frame: Any, *, context: str, source: str, name: str, target: str | None, digest: str | None = None
    ) -> None:
        from tabtrack.tracking.mlflow_io import dataset_entity

        entity = dataset_entity(frame, source=source, name=name, target=target, digest=digest)
        record = {
            "context": context,
            "dataset": {
                "name": entity.name,
                "digest": entity.digest,
                "source_type": entity.source_type,
                "source": entity.source,
                "schema": entity.schema,
                "profile": entity.profile,
            },
        }
        with (self._dir / "inputs.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def log_model(self, artifact: ModelArtifact) -> str | None:
        from tabtrack.tracking.mlflow_io import save_model

        models = self._dir / "models"
        models.mkdir(exist_ok=True)
        path = models / artifact.name
        save_model(artifact, path)
        write_json(
            models / f"{artifact.name}.json",
            {"name": artifact.name, "flavor": artifact.flavor, "trusted_types": artifact.trusted_types},
        )
        return str(path)

    @property
    def offline_bundle(self) -> str | None:
        return str(self.bundle) if self.bundle else None
