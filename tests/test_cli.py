"""The CLI as a new user runs it: real subprocesses, the README's commands, the UI on the same store."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import EXAMPLES, free_port, parent_run, wait_for_http
from conftest import TABTRACK as TABTRACK_EXE

TABTRACK = [TABTRACK_EXE]


def _run(*args, cwd, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [*TABTRACK, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.fresh_store
def test_readme_main_example(workdir):
    """As a new user: no store yet; the first run makes it."""
    from mlflow import MlflowClient

    assert not (workdir / "mlflow.db").exists()
    done = _run("train", EXAMPLES / "breast_cancer.csv", "--target", "target", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "run id:" in done.stdout and "roc_auc" in done.stdout and "test" in done.stdout
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr
    run = parent_run(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), "breast_cancer")
    assert run.info.run_id in done.stdout
    assert run.info.status == "FINISHED"


def test_readme_cv_and_set_example(workdir, client):
    done = _run(
        "train", EXAMPLES / "diabetes.csv", "--target", "target", "--model", "random_forest",
        "--set", "model.params.max_depth=6", "--cv", "5", "--tag", "stage=candidate", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = parent_run(client, "diabetes")
    assert run.data.params["max_depth"] == "6" and run.data.params["cv_folds"] == "5"
    assert run.data.tags["stage"] == "candidate"
    assert "± " in done.stdout  # cv mean ± std column


def test_config_example_runs(workdir, client):
    done = _run(
        "train", "--config", EXAMPLES / "diabetes.yaml", "--set", f"data={EXAMPLES / 'diabetes.csv'}", cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    run = parent_run(client, "diabetes_progression")
    assert run.data.params["model_type"] == "hist_gradient_boosting" and run.data.tags["owner"] == "data-science"


def test_help_version_and_families():
    assert _run("--version", cwd=".").stdout.strip().startswith("tabtrack ")
    helped = _run("train", "--help", cwd=".")
    assert helped.returncode == 0 and "--target" in helped.stdout
    families = _run("families", cwd=".").stdout
    for name in ("logistic_regression", "ridge", "random_forest", "hist_gradient_boosting"):
        assert name in families


def _get(url: str, data: dict | None = None):
    request = urllib.request.Request(
        url, data=json.dumps(data).encode() if data is not None else None, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ui_serves_the_same_store(workdir, data_dir):
    trained = _run("train", data_dir / "diabetes.csv", "--target", "target", "--model", "ridge", cwd=workdir)
    assert trained.returncode == 0, trained.stderr
    port = free_port()
    # The product's own default for job runners is what is tested (conftest turns them off for test servers).
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")
    }
    proc = subprocess.Popen(
        [*TABTRACK, "ui", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", proc, what="tabtrack ui")
        _, body = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=diabetes")
        experiment_id = json.loads(body)["experiment"]["experiment_id"]
        _, body = _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
        runs = json.loads(body)["runs"]
        assert len(runs) == 1
        run_id = runs[0]["info"]["run_id"]
        assert any(m["key"] == "test_rmse" for m in runs[0]["data"]["metrics"])
        _, body = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=config")
        assert [f["path"] for f in json.loads(body)["files"]] == ["config/resolved.yaml"]
        status, page = _get(f"{base}/")
        assert status == 200 and b"<html" in page.lower()
        # Only the server and its worker: none of MLflow's GenAI job runners (seven processes importing MLflow).
        commands = _descendant_commands(proc.pid)
        assert any("mlflow" in c and "server" in c for c in commands), commands
        assert not [c for c in commands if "huey" in c], commands
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output.splitlines()[0]


def _descendant_commands(pid: int) -> list[str]:
    """Command lines of every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        todo += children.get(child, [])
        try:
            found.append((Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


@pytest.mark.fresh_store
def test_unknown_option_is_a_usage_error(workdir):
    done = _run("train", "x.csv", "--targt", "y", cwd=workdir)
    assert done.returncode == 2 and "No such option" in done.stderr
    assert not Path(workdir / "mlflow.db").exists()
