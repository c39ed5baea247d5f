"""Offline runs and sync: a tracking server that is down at the start or dies mid-run costs nothing;
`tabtrack sync` uploads the bundle as ordinary runs (original timestamps), is idempotent, resumes after a
partial failure, and deletes a bundle only after reading it back. Real `mlflow server` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TABTRACK as TABTRACK_EXE
from conftest import free_port, runs_of, start_mlflow_server, stop_server

pytestmark = pytest.mark.multiprocess  # servers and CLI subprocesses

TABTRACK = [TABTRACK_EXE]


def _tabtrack(workdir: Path, *args: str, uri: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*TABTRACK, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def _bundles(workdir: Path) -> list[Path]:
    root = workdir / ".tabtrack" / "offline"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _bundle_runs(bundle: Path) -> dict[str, dict]:
    """Everything the bundle holds, by run name."""
    runs = {}
    for path in (bundle / "runs").iterdir():
        record = json.loads((path / "run.json").read_text())
        metrics = (
            [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
            if (path / "metrics.jsonl").exists()
            else []
        )
        artifacts = sorted(
            p.relative_to(path / "artifacts").as_posix() for p in (path / "artifacts").rglob("*") if p.is_file()
        )
        runs[record["run_name"]] = {
            "record": record,
            "params": json.loads((path / "params.json").read_text()) if (path / "params.json").exists() else {},
            "tags": json.loads((path / "tags.json").read_text()),
            "metrics": metrics,
            "artifacts": artifacts,
            "inputs": [json.loads(x) for x in (path / "inputs.jsonl").read_text().splitlines()]
            if (path / "inputs.jsonl").exists()
            else [],
        }
    return runs


def _artifact_files(client, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for entry in client.list_artifacts(run_id, path):
        files |= _artifact_files(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return files


def _assert_synced_field_by_field(client, expected: dict[str, dict], experiment: str) -> dict[str, object]:
    runs = {r.info.run_name: r for r in runs_of(client, experiment)}
    assert set(runs) == set(expected)
    for name, want in expected.items():
        run = runs[name]
        assert run.info.status == want["record"]["status"]
        assert run.info.start_time == want["record"]["start_time"]
        assert run.info.end_time == want["record"]["end_time"]
        assert run.data.params == want["params"]
        assert {k: v for k, v in run.data.tags.items() if k in want["tags"]} == want["tags"]
        by_key: dict[str, list] = {}
        for m in want["metrics"]:
            by_key.setdefault(m["key"], []).append((m["step"], m["timestamp"], m["value"]))
        for key, values in by_key.items():
            history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == sorted(values), key  # every value once, original steps and timestamps
        assert set(want["artifacts"]) <= _artifact_files(client, run.info.run_id)
        digests = sorted(d.dataset.digest for d in run.inputs.dataset_inputs)
        assert digests == sorted(i["dataset"]["digest"] for i in want["inputs"])
        parent = want["record"]["parent"]
        if parent:
            parent_name = next(n for n, w in expected.items() if w["record"]["local_id"] == parent)
            assert run.data.tags["mlflow.parentRunId"] == runs[parent_name].info.run_id
    return runs


@pytest.fixture
def server_dir(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    return folder


def test_unreachable_at_start_goes_offline_then_syncs_once(workdir, data_dir, server_dir):
    import mlflow
    from mlflow import MlflowClient

    shutil.copy(data_dir / "breast_cancer.csv", "data.csv")
    port = free_port()  # nothing listens here yet
    uri = f"http://127.0.0.1:{port}"
    started = time.time()
    done = _tabtrack(workdir, "train", "data.csv", "--target", "target", "--cv", "2",
                     "--set", "model.params.n_estimators=20", uri=uri)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.time() - started < 60
    assert "unreachable" in done.stderr and "tabtrack sync" in done.stdout
    (bundle,) = _bundles(workdir)
    expected = _bundle_runs(bundle)
    assert len(expected) == 3  # the run and its two CV folds
    parent = next(w for w in expected.values() if not w["record"]["parent"])
    assert parent["record"]["status"] == "FINISHED" and "test_roc_auc" in {m["key"] for m in parent["metrics"]}
    assert {"report.html", "config/resolved.yaml", "plots/roc_curve.png"} <= set(parent["artifacts"])

    synced = _tabtrack(workdir, "sync", uri=uri)
    assert synced.returncode != 0 and "unreachable" in synced.stderr  # still down: nothing lost, bundle kept
    assert _bundles(workdir) == [bundle]

    proc = start_mlflow_server(server_dir, port, backend=f"sqlite:///{server_dir / 'db.sqlite'}",
                               artifacts=server_dir / "artifacts")  # fmt: skip
    try:
        synced = _tabtrack(workdir, "sync", uri=uri)
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert "synced" in synced.stdout
        assert _bundles(workdir) == []  # deleted after the read-back check
        client = MlflowClient(uri)
        runs = _assert_synced_field_by_field(client, expected, "data")
        top = runs[parent["record"]["run_name"]]
        # the model serves the same predictions as the offline run would have
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model(f"runs:/{top.info.run_id}/model")
        rows = pd.read_csv("data.csv").drop(columns="target").head(20)
        assert len(model.predict(rows)) == 20

        again = _tabtrack(workdir, "sync", uri=uri)
        assert again.returncode == 0 and "nothing to sync" in again.stdout
        assert len(runs_of(client, "data")) == 3  # idempotent: nothing created twice
    finally:
        stop_server(proc)


def test_forced_offline_with_sync_resuming_after_a_partial_failure(workdir, data_dir, server_dir):
    from mlflow import MlflowClient

    shutil.copy(data_dir / "wine.csv", "data.csv")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = start_mlflow_server(server_dir, port, backend=f"sqlite:///{server_dir / 'db.sqlite'}",
                               artifacts=server_dir / "artifacts")  # fmt: skip
    try:
        done = _tabtrack(workdir, "train", "data.csv", "--target", "target", "--offline", "--intervals", "0.9",
                         "--model", "hist_gradient_boosting", "--set", "model.params.max_iter=20", uri=uri)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(uri)
        assert runs_of(client, "data") == []  # --offline: nothing sent even though the server is up
        (bundle,) = _bundles(workdir)
        expected = _bundle_runs(bundle)

        # Break the bundle's model so the first sync fails after creating the run and sending values.
        (run_dir,) = list((bundle / "runs").iterdir())
        model_file = next((run_dir / "models" / "model").glob("model.*"))
        stash = workdir / "stash"
        shutil.move(model_file, stash)
        first = _tabtrack(workdir, "sync", uri=uri)
        assert first.returncode == 1 and "FAILED" in first.stdout
        assert _bundles(workdir) == [bundle]
        (partial,) = runs_of(client, "data")
        state = json.loads((bundle / "sync.json").read_text())
        assert list(state.values()) == [partial.info.run_id]

        shutil.move(stash, model_file)
        second = _tabtrack(workdir, "sync", uri=uri)
        assert second.returncode == 0, second.stdout + second.stderr[-3000:]
        assert _bundles(workdir) == []
        (run,) = runs_of(client, "data")
        assert run.info.run_id == partial.info.run_id  # resumed into the same run, no duplicate values
        _assert_synced_field_by_field(client, expected, "data")
        # the conformal calibration travels in the model's metadata, and model_intervals answers with sets
        import mlflow

        mlflow.set_tracking_uri(uri)
        assert (
            mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model").metadata["tabtrack_intervals"]["level"]
            == 0.9
        )
        rows = pd.read_csv("data.csv").drop(columns="target").head(5)
        sets = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model_intervals").predict(rows)["prediction_set"]
        assert all(len(s) >= 1 for s in sets)
    finally:
        stop_server(proc)


def test_server_dying_mid_run_continues_offline_and_sync_completes_the_same_run(workdir, data_dir, server_dir):
    from mlflow import MlflowClient

    frame = pd.read_csv(data_dir / "diabetes.csv")
    pd.concat([frame] * 30, ignore_index=True).to_csv("big.csv", index=False)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = f"sqlite:///{server_dir / 'db.sqlite'}"
    proc = start_mlflow_server(server_dir, port, backend=backend, artifacts=server_dir / "artifacts")
    client = MlflowClient(uri)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    training = subprocess.Popen(
        [*TABTRACK, "train", "big.csv", "--target", "target", "--cv", "4", "--experiment", "midrun",
         "--set", "model.params.n_estimators=80"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # kill the server once the first fold has finished on it
            exp = client.get_experiment_by_name("midrun")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any(r.info.status == "FINISHED" for r in runs):
                break
            assert training.poll() is None, training.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("no fold finished within 120 s")
        remote_parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        stop_server(proc)
        out, err = training.communicate(timeout=600)
        assert training.returncode == 0, err[-3000:]
        assert "stopped answering" in err and "tabtrack sync" in out

        (bundle,) = _bundles(workdir)
        offline = _bundle_runs(bundle)
        top = next(w for w in offline.values() if not w["record"]["parent"])
        assert top["record"]["remote_run_id"] == remote_parent.info.run_id

        proc = start_mlflow_server(server_dir, port, backend=backend, artifacts=server_dir / "artifacts")
        synced = _tabtrack(workdir, "sync", uri=uri)
        assert synced.returncode == 0, synced.stdout + synced.stderr[-3000:]
        runs = runs_of(client, "midrun")
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert [p.info.run_id for p in parents] == [remote_parent.info.run_id]  # completed, not duplicated
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert {"test_rmse", "cv_rmse_mean", "cv_rmse_std", "train_rmse"} <= set(parent.data.metrics)
        assert int(parent.data.params["n_train_samples"]) > 0
        folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in folds) == [f"fold_{k}" for k in range(1, 5)]
        assert all(r.info.status == "FINISHED" and "cv_rmse" in r.data.metrics for r in folds)
        for key in parent.data.metrics:
            assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key  # no value twice
        assert {"report.html", "plots"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    finally:
        if training.poll() is None:
            training.kill()
        stop_server(proc)
