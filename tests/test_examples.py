"""The three own-code example projects (examples/own_code/), run end to end as their README says, each copied
to a temporary folder: scripts in subprocesses, the stores read back with MlflowClient."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import EXAMPLES, free_port, require, runs_of, start_mlflow_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
PROJECTS = EXAMPLES / "own_code"


def _project(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(PROJECTS / name, tmp_path / name))


def _run(args: list[str], cwd: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # python, tabtrack
    done = subprocess.run(args, cwd=cwd, env={**environment, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_heart_disease_two_models_on_a_server_and_the_better_one_registered(tmp_path):
    project = _project("heart_disease", tmp_path)
    _run([sys.executable, "make_data.py"], project)
    port = free_port()
    server = start_mlflow_server(
        project, port, backend=f"sqlite:///{tmp_path / 'server.db'}", artifacts=tmp_path / "art"
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for model in ("logreg", "rf"):
            _run([sys.executable, "train.py", "--model", model], project, MLFLOW_TRACKING_URI=uri)
        out = _run([sys.executable, "register_best.py"], project, MLFLOW_TRACKING_URI=uri)
        client = MlflowClient(uri)
        runs = {r.info.run_name: r for r in runs_of(client, "heart-disease") if "mlflow.parentRunId" not in r.data.tags}
        assert set(runs) == {"logreg", "rf"} and {r.info.status for r in runs.values()} == {"FINISHED"}
        best = max(runs.values(), key=lambda r: r.data.metrics["cv_roc_auc_mean"])
        champion = client.get_model_version_by_alias("heart-disease", "champion")
        assert champion.tags["source_run_id"] == best.info.run_id and best.info.run_name in out
        assert runs["rf"].data.tags["data.path"].endswith("data/heart.csv")
        _run(["tabtrack", "predict", "models:/heart-disease@champion", "data/heart.csv", "-o", "p.csv"], project,
             MLFLOW_TRACKING_URI=uri)  # fmt: skip
        assert (project / "p.csv").read_text().count("\n") == 601
        # the comparison page names each run by its full id and links it to the server's UI
        ids = [runs[name].info.run_id for name in ("logreg", "rf")]
        _run(["tabtrack", "report", *ids, "-o", "compare.html"], project, MLFLOW_TRACKING_URI=uri)
        page = (project / "compare.html").read_text()
        experiment = runs["rf"].info.experiment_id
        for run_id in ids:
            assert f"<code class='id'>{run_id}</code>" in page
            assert f"href='{uri}/#/experiments/{experiment}/runs/{run_id}'" in page
    finally:
        stop_server(server)


def test_train_cli_three_models_a_pytorch_loop_and_no_track(tmp_path):
    for module in ("xgboost", "torch"):
        require(module)
    project = _project("train_cli", tmp_path)
    data = ["--data", str(EXAMPLES / "breast_cancer.csv")]
    out = _run(["bash", "run_all.sh", *data], project)
    assert all(name in out for name in ("rf", "xgboost", "nn"))  # the closing `tabtrack runs list`
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in runs_of(client, "breast-cancer-own-code")}
    assert set(runs) == {"rf", "xgboost", "nn"} and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert all(r.data.metrics["test_roc_auc"] > 0.95 for r in runs.values())
    nn = runs["nn"]
    assert sorted(m.step for m in client.get_metric_history(nn.info.run_id, "train_loss")) == list(range(1, 41))
    assert "plots/loss_curve.png" in {a.path for a in client.list_artifacts(nn.info.run_id, "plots")}
    assert nn.data.params["epochs"] == "40" and nn.data.params["batch_size"] == "64"
    untracked = _run([sys.executable, "train.py", "--model", "rf", "--no-track", *data], project)
    assert "not tracked" in untracked and len(runs_of(client, "breast-cancer-own-code")) == 3


def test_housing_features_ship_with_the_model_and_load_in_a_fresh_interpreter(tmp_path):
    project = _project("housing", tmp_path)
    _run([sys.executable, "make_data.py"], project)
    out = _run([sys.executable, "train.py"], project)
    model_uri = out.strip().splitlines()[-1].removeprefix("model: ")
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = runs_of(client, "housing")
    assert "src.features.HouseholdRatios" in run.data.tags["tabtrack.trusted_types"].split(",")
    # isolated (-I: no PYTHONPATH, no current folder on sys.path), from an empty folder: src/ is not importable
    empty = tmp_path / "empty"
    empty.mkdir()
    code = (
        "import importlib.util, mlflow, pandas as pd; assert importlib.util.find_spec('src') is None; "
        f"model = mlflow.pyfunc.load_model({model_uri!r}); "
        f"rows = pd.read_csv({str(project / 'data' / 'housing.csv')!r}).drop(columns=['median_house_value']); "
        "print(len(model.predict(rows)))"
    )
    printed = _run([sys.executable, "-I", "-c", code], empty, MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    assert printed.strip().splitlines()[-1] == "3000"
