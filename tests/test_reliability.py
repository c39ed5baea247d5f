"""Reliability and security: concurrent writers, secrets kept out of the store, fuzzed options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TABTRACK as TABTRACK_EXE
from conftest import free_port, runs_of, wait_for_http

pytestmark = pytest.mark.multiprocess  # servers and CLI subprocesses

TABTRACK = [TABTRACK_EXE]


def _concurrent_trains(workdir: Path, data: Path, n: int, env: dict) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(
            [
                *TABTRACK,
                "train",
                str(data),
                "--target",
                "target",
                "--experiment",
                "concurrent",
                "--cv",
                "2",
                "--set",
                "model.params.n_estimators=10",
                "--seed",
                str(seed),
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _assert_complete_runs(client, n: int) -> None:
    runs = runs_of(client, "concurrent")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == n
    assert sorted(int(r.data.params["random_state"]) for r in parents) == list(range(n))
    for run in parents:
        assert run.info.status == "FINISHED"
        assert {"test_roc_auc", "train_roc_auc", "cv_roc_auc_mean"} <= set(run.data.metrics)
        assert len(run.data.params) > 10 and "data.sha256" in run.data.tags
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"plots", "reports", "report.html", "config"} <= artifacts
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        # no value written twice by a retry
        history = client.get_metric_history(run.info.run_id, "test_roc_auc")
        assert len(history) == 1


def test_eight_concurrent_trains_on_the_default_sqlite_store(workdir, data_dir, client):
    shutil.copy(data_dir / "breast_cancer.csv", "data.csv")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    results = _concurrent_trains(workdir, Path("data.csv"), 8, env)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete_runs(client, 8)


SECRETS = {
    "uri password": "S3cretUriPw",
    "env token": "tok-EnvSecret-123",
    "aws key": "awsSecretKey-456",
    "mlflow token": "mlflowTok-789",
    "config password": "cfgPassw0rd",
    "config api key": "cfgApiKey-000",
    "cli tag token": "cliTagTok-111",
}


@pytest.fixture
def sqlite_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and artifacts proxied into tmp_path/artifacts."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, what="mlflow server")
        yield port, tmp_path
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_secrets_never_reach_the_store_artifacts_or_output(workdir, data_dir, sqlite_server):
    port, server_dir = sqlite_server
    shutil.copy(data_dir / "breast_cancer.csv", "data.csv")
    Path("config.yaml").write_text(
        "target: target\n"
        f"tags:\n  db_password: {SECRETS['config password']}\n  service_api_key: {SECRETS['config api key']}\n"
        "  owner: data-science\n"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://alice:{SECRETS['uri password']}@127.0.0.1:{port}",
        "MY_SERVICE_TOKEN": SECRETS["env token"],
        "AWS_SECRET_ACCESS_KEY": SECRETS["aws key"],
        "MLFLOW_TRACKING_TOKEN": SECRETS["mlflow token"],
    }
    done = subprocess.run(
        [*TABTRACK, "-v", "train", "data.csv", "--config", "config.yaml", "--cv", "2",
         "--tag", f"deploy_token={SECRETS['cli tag token']}", "--set", "model.params.n_estimators=20"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(f"http://127.0.0.1:{port}")
    (run,) = [r for r in runs_of(client, "data") if "mlflow.parentRunId" not in r.data.tags]
    assert run.data.tags["db_password"] == "***" and run.data.tags["owner"] == "data-science"
    assert run.data.tags["deploy_token"] == "***"

    # Everything the run left anywhere: the server's database, every artifact, the terminal output.
    places = {"output": (done.stdout + done.stderr).encode()}
    places["server.db"] = (server_dir / "server.db").read_bytes()
    for path in (server_dir / "artifacts").rglob("*"):
        if path.is_file():
            places[str(path.relative_to(server_dir))] = path.read_bytes()
    assert any("report.html" in name for name in places) and any("MLmodel" in name for name in places)
    leaks = [
        f"{what} in {place}"
        for what, secret in SECRETS.items()
        for place, content in places.items()
        if secret.encode() in content
    ]
    assert leaks == []


ADMIN_PASSWORD = "Adm1n-Passw0rd-for-tests"


@pytest.fixture
def basic_auth_server(tmp_path):
    from conftest import start_mlflow_server, stop_server

    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # as scripts/team-stack.sh: one password check per minute, not per request
    )
    port = free_port()
    proc = start_mlflow_server(
        tmp_path, port, backend=f"sqlite:///{tmp_path / 'db.sqlite'}", artifacts=tmp_path / "artifacts",
        app="basic-auth", env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests"},
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        stop_server(proc)


def test_basic_auth_server(workdir, data_dir, basic_auth_server, monkeypatch):
    uri, server_dir = basic_auth_server
    shutil.copy(data_dir / "wine.csv", "data.csv")
    args = [*TABTRACK, "train", "data.csv", "--target", "target", "--set", "model.params.n_estimators=10"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": "admin"}

    wrong = subprocess.run(args, cwd=workdir, env={**env, "MLFLOW_TRACKING_PASSWORD": "not-it"},
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 2 and len(lines) == 1, wrong.stderr
    assert "rejected the credentials" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert not (workdir / ".tabtrack" / "offline").exists()  # refused is not unreachable: nothing goes offline

    right = subprocess.run(args, cwd=workdir, env={**env, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD},
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert right.returncode == 0, right.stderr[-3000:]
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    (run,) = runs_of(MlflowClient(uri), "data")
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    stored = [(server_dir / "db.sqlite").read_bytes()]
    stored += [p.read_bytes() for p in (server_dir / "artifacts").rglob("*") if p.is_file()]
    assert not any(ADMIN_PASSWORD.encode() in blob for blob in stored)
    assert ADMIN_PASSWORD not in right.stdout + right.stderr
