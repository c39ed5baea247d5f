"""`tabtrack sync`: upload offline bundles as ordinary MLflow runs, with their original timestamps.

Idempotent and resumable: `sync.json` in the bundle maps each offline run to the server run made for it,
and is written before anything is sent to that run, so a sync cut short continues into the same runs
(values the server already holds are skipped, not sent twice). A bundle is deleted only after every run
reads back from the server with all of its params, tags, metric values, datasets, artifacts and models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tabtrack.errors import TrackingError
from tabtrack.lineage import process_alive
from tabtrack.redact import redact_uri
from tabtrack.tracking.mlflow_errors import retry_locked
from tabtrack.tracking.mlflow_io import MAX_METRICS, MAX_PARAMS, MAX_TAGS, PARENT_TAG, flavor_module, log_saved
from tabtrack.tracking.offline import offline_root, read_json, write_json
from tabtrack.tracking.store import resolve_tracking_uri, server_reachable

log = logging.getLogger(__name__)

SYNCED_TAG = "tabtrack.offline_bundle"


@dataclass
class SyncReport:
    synced: dict[str, list[str]] = field(default_factory=dict)  # bundle -> server run ids
    skipped: dict[str, str] = field(default_factory=dict)  # bundle -> why
    failed: dict[str, str] = field(default_factory=dict)  # bundle -> error

    def lines(self) -> list[str]:
        if not (self.synced or self.skipped or self.failed):
            return ["nothing to sync"]
        out = [f"synced {name}: {len(ids)} run(s) ({', '.join(ids)})" for name, ids in self.synced.items()]
        out += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        out += [
            f"FAILED {name}: {error} (the bundle is kept; run tabtrack sync again)"
            for name, error in self.failed.items()
        ]
        return out


@dataclass
class OfflineRun:
    path: Path
    record: dict[str, Any]

    @property
    def local_id(self) -> str:
        return self.record["local_id"]

    # Read once: upload, the end-time fallback and the read-back check all use them.
    @cached_property
    def params(self) -> dict[str, str]:
        return read_json(self.path / "params.json", {})

    @cached_property
    def tags(self) -> dict[str, str]:
        return read_json(self.path / "tags.json", {})

    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        return _jsonl(self.path / "metrics.jsonl")

    @cached_property
    def inputs(self) -> list[dict[str, Any]]:
        return _jsonl(self.path / "inputs.jsonl")

    @cached_property
    def artifacts(self) -> list[str]:
        root = self.path / "artifacts"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    @cached_property
    def models(self) -> list[dict[str, Any]]:
        folder = self.path / "models"
        return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def sync_bundles(directory: str | Path | None = None, *, tracking_uri: str | None = None) -> SyncReport:
    from mlflow import MlflowClient

    root = offline_root(directory)
    uri = resolve_tracking_uri(tracking_uri)
    if not server_reachable(uri):
        raise TrackingError(f"tracking server {redact_uri(uri)} is unreachable; sync when it answers.")
    report = SyncReport()
    bundles = sorted(p for p in root.glob("*") if (p / "bundle.json").is_file()) if root.is_dir() else []
    if not bundles:
        return report
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    for bundle in bundles:
        runs = _runs(bundle)
        busy = _in_progress(bundle, runs)
        if busy:
            report.skipped[bundle.name] = busy
            continue
        try:
            run_ids = _sync_bundle(client, bundle, runs)
            problems = _verify(client, bundle, runs)
            if problems:
                raise RuntimeError("read-back check failed: " + "; ".join(problems[:5]))
        except Exception as exc:  # keep going with the other bundles; this one stays for the next sync
            log.debug("sync of %s failed", bundle, exc_info=True)
            report.failed[bundle.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            continue
        shutil.rmtree(bundle)
        report.synced[bundle.name] = run_ids
    return report


def _in_progress(bundle: Path, runs: list[OfflineRun]) -> str | None:
    """A bundle still being written by a live process on this host is left alone."""
    meta = read_json(bundle / "bundle.json", {})
    if all(run.record["status"] != "RUNNING" for run in runs):
        return None
    writer = int(meta.get("pid", 0))
    if meta.get("host") == socket.gethostname() and writer != os.getpid() and process_alive(writer):
        return f"its run is still going (pid {writer})"
    return None  # the writer died: the RUNNING runs are uploaded as FAILED


def _runs(bundle: Path) -> list[OfflineRun]:
    runs = [
        OfflineRun(p, read_json(p / "run.json"))
        for p in sorted((bundle / "runs").glob("*"))
        if (p / "run.json").is_file()
    ]
    by_id = {run.local_id: run for run in runs}

    def depth(run: OfflineRun) -> int:
        parent = run.record.get("parent")
        return 0 if parent not in by_id else 1 + depth(by_id[parent])

    return sorted(runs, key=lambda run: (depth(run), run.record["start_time"]))  # parents first


def _sync_bundle(client, bundle: Path, runs: list[OfflineRun]) -> list[str]:
    state_path = bundle / "sync.json"
    state: dict[str, str] = read_json(state_path, {})
    run_ids = []
    for run in runs:
        remote, resumed = _remote_run(client, run, state)
        if run.local_id not in state:
            state[run.local_id] = remote
            write_json(state_path, state)  # before sending anything, so a retry finds this run
        _upload(client, run, remote, resumed=resumed)
        run_ids.append(remote)
    return run_ids


def _remote_run(client, run: OfflineRun, state: dict[str, str]) -> tuple[str, bool]:
    """The server run for an offline run: the one recorded (by a failover or an earlier sync), else a new one."""
    from mlflow.exceptions import MlflowException

    for candidate in (state.get(run.local_id), run.record.get("remote_run_id")):
        if candidate:
            try:
                client.get_run(candidate)
                return candidate, True
            except MlflowException:
                continue
    experiment = client.get_experiment_by_name(run.record["experiment"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(run.record["experiment"])
    tags = {"mlflow.runName": run.record["run_name"], SYNCED_TAG: run.path.parent.parent.name}
    parent = run.record.get("parent")
    if parent:
        tags[PARENT_TAG] = state[parent]
        # A child whose start request reached the server just as it died: the server made the run but the
        # trainer never heard back. Complete that run rather than leave it RUNNING next to a copy.
        orphans = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{state[parent]}' and attributes.run_name = '{run.record['run_name']}'"
            " and attributes.status = 'RUNNING'",
        )
        claimed = set(state.values())
        orphan = next((r for r in orphans if r.info.run_id not in claimed), None)
        if orphan is not None:
            return orphan.info.run_id, True
    created = client.create_run(
        experiment_id, start_time=run.record["start_time"], tags=tags, run_name=run.record["run_name"]
    )
    return created.info.run_id, False


def _upload(client, run: OfflineRun, remote: str, *, resumed: bool) -> None:
    from mlflow.entities import Metric, Param, RunTag

    existing = client.get_run(remote)
    params = {k: v for k, v in run.params.items() if existing.data.params.get(k) != v}
    for chunk in _chunks([Param(k, v) for k, v in params.items()], MAX_PARAMS):
        client.log_batch(remote, params=chunk)
    tags = dict(run.tags)
    tags[SYNCED_TAG] = run.path.parent.parent.name
    for chunk in _chunks([RunTag(k, str(v)) for k, v in tags.items()], MAX_TAGS):
        client.log_batch(remote, tags=chunk)

    metrics = run.metrics
    if resumed:  # the server may hold some of these already (a failover, or a sync cut short)
        held = _held_metrics(client, remote, {m["key"] for m in metrics})
        metrics = [m for m in metrics if (m["key"], m["step"], m["timestamp"], m["value"]) not in held]
    batch = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in metrics]
    for chunk in _chunks(batch, MAX_METRICS):
        client.log_batch(remote, metrics=chunk)

    _upload_inputs(client, run, remote, existing)
    if (run.path / "artifacts").is_dir() and run.artifacts:
        client.log_artifacts(remote, str(run.path / "artifacts"))
    _upload_models(client, run, remote)

    status = run.record["status"]
    if status == "RUNNING":  # its process died before ending it (SIGKILL, power loss)
        status = "FAILED"
        client.set_tag(remote, "error", "the process recording this run offline ended without closing it")
    client.set_terminated(remote, status=status, end_time=run.record.get("end_time") or _last_time(run))


def _held_metrics(client, run_id: str, keys: set[str]) -> set[tuple]:
    held = set()
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            held.add((m.key, m.step, m.timestamp, m.value))
    return held


def _upload_inputs(client, run: OfflineRun, remote: str, existing) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    have = {
        (d.dataset.digest, next((t.value for t in d.tags if t.key == "mlflow.data.context"), None))
        for d in (existing.inputs.dataset_inputs if existing.inputs else [])
    }
    datasets = [
        DatasetInput(Dataset(**record["dataset"]), tags=[InputTag("mlflow.data.context", record["context"])])
        for record in run.inputs
        if (record["dataset"]["digest"], record["context"]) not in have
    ]
    if datasets:
        retry_locked(client.log_inputs, remote, datasets=datasets)


def _upload_models(client, run: OfflineRun, remote: str) -> None:
    """Log each saved model folder under the server run as it was saved (MLmodel metadata, code, a pyfunc's
    artifacts and config included), from a copy that loads: the bundle stays whole until the run is uploaded."""
    import tempfile

    import mlflow

    # The installed runtime package before any model loads: MLflow puts a model's own code/ copy first on sys.path,
    # and a package imported from a folder this process deletes could not import its other modules later.
    import tabtrack_runtime  # noqa: F401

    present = {m.name for m in _logged_models(client, remote)}
    for meta in run.models:
        if meta["name"] in present:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / meta["name"]
            shutil.copytree(run.path / "models" / meta["name"], copy)
            flavor_module(meta["flavor"]).load_model(str(copy))  # a damaged bundle fails here, before upload
            with mlflow.start_run(run_id=remote):  # logging links the model to the active run
                log_saved(meta["flavor"], meta["name"], copy)


def _logged_models(client, run_id: str) -> list:
    import mlflow

    run = client.get_run(run_id)
    try:
        return mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            output_format="list",
        )
    except Exception:  # older servers: no LoggedModel search
        return []


def _verify(client, bundle: Path, runs: list[OfflineRun]) -> list[str]:
    """Read every run back from the server and compare it with the bundle, field by field."""
    state = read_json(bundle / "sync.json", {})
    problems = []
    for run in runs:
        remote = client.get_run(state[run.local_id])
        name = run.record["run_name"]
        for key, value in run.params.items():
            if remote.data.params.get(key) != value:
                problems.append(f"{name}: param {key}")
        for key, value in run.tags.items():
            if remote.data.tags.get(key) != str(value):
                problems.append(f"{name}: tag {key}")
        expected = defaultdict(list)
        for m in run.metrics:
            expected[m["key"]].append((m["step"], m["timestamp"], m["value"]))
        for key, values in expected.items():
            held = {(m.step, m.timestamp, m.value) for m in client.get_metric_history(remote.info.run_id, key)}
            if not set(values) <= held:
                problems.append(f"{name}: metric {key}")
        digests = {d.dataset.digest for d in (remote.inputs.dataset_inputs if remote.inputs else [])}
        if not {r["dataset"]["digest"] for r in run.inputs} <= digests:
            problems.append(f"{name}: datasets")
        uploaded = set(_artifact_files(client, remote.info.run_id))
        missing = [a for a in run.artifacts if a not in uploaded]
        if missing:
            problems.append(f"{name}: artifacts {missing[:3]}")
        models = {m.name for m in _logged_models(client, remote.info.run_id)}
        if not {m["name"] for m in run.models} <= models:
            problems.append(f"{name}: models")
        want = run.record["status"] if run.record["status"] != "RUNNING" else "FAILED"
        if remote.info.status != want:
            problems.append(f"{name}: status {remote.info.status} != {want}")
    return problems


def _artifact_files(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for entry in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return files


def _last_time(run: OfflineRun) -> int:
    times = [m["timestamp"] for m in run.metrics]
    return max(times, default=run.record["start_time"])


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: everything before it is kept
                break
    return records


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
