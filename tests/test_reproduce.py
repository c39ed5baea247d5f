"""Reproducibility: `reproduce` re-runs and verifies, refuses changed data, weighs git and packages;
`init` scaffolds a DVC project whose `dvc repro` and `dvc exp run` make tracked runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import git, require, runs_of

FAMILIES = [
    ("random_forest", None, ["--set", "model.params.n_estimators=30"]),
    ("hist_gradient_boosting", None, ["--set", "model.params.max_iter=30"]),
    ("xgboost", "xgboost", ["--set", "model.params.n_estimators=30"]),
    ("lightgbm", "lightgbm", ["--set", "model.params.n_estimators=30"]),
    ("mlp", "torch", ["--set", "model.params.epochs=5"]),
]


def _only_run(client, experiment: str, **tags):
    runs = [r for r in runs_of(client, experiment) if all(r.data.tags.get(k) == v for k, v in tags.items())]
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@pytest.mark.parametrize("model, module, extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_reproduce_matches_exactly(workdir, data_dir, cli, client, model, module, extra):
    if module:
        require(module)
    shutil.copy(data_dir / "breast_cancer.csv", "data.csv")
    cv = ["--cv", "2"] if model == "random_forest" else []  # CV once is enough to show folds replay too
    code, _, err = cli("train", "data.csv", "--target", "target", "--model", model, *cv, *extra)
    assert code == 0, err
    original = _only_run(client, "data")
    code, out, err = cli("reproduce", original.info.run_id)
    assert code == 0, out + err
    assert "reproduced: all" in out and "NO" not in out
    copy = _only_run(client, "data", **{"tabtrack.reproduces": original.info.run_id})
    assert copy.data.tags["tabtrack.reproduced"] == "true"
    assert {k: v for k, v in copy.data.metrics.items() if k.startswith("test_")} == {
        k: v for k, v in original.data.metrics.items() if k.startswith("test_")
    }
    assert copy.data.params == original.data.params


def test_reproduce_refuses_changed_data_and_reports_a_mismatch(workdir, data_dir, cli, client):
    frame = pd.read_csv(data_dir / "breast_cancer.csv")
    frame.to_csv("data.csv", index=False)
    code, _, err = cli("train", "data.csv", "--target", "target", "--set", "model.params.n_estimators=20")
    assert code == 0, err
    original = _only_run(client, "data")
    recorded = original.data.tags["data.sha256"]

    frame.iloc[::-1].iloc[:450].to_csv("data.csv", index=False)  # different rows: different data
    code, out, err = cli("reproduce", original.info.run_id)
    assert code == 2
    assert recorded[:12] in err and "--allow-data-change" in err and len(err.strip().splitlines()) == 1
    assert len(runs_of(client, "data")) == 1  # nothing re-ran

    code, out, err = cli("reproduce", original.info.run_id, "--allow-data-change")
    assert code == 1  # it ran on other data, so the metrics differ and the table says which
    assert "NOT reproduced" in err and "NO" in out
    assert (
        _only_run(client, "data", **{"tabtrack.reproduces": original.info.run_id}).data.tags["tabtrack.reproduced"]
        == "false"
    )

    # --data points at the original file wherever it now lives
    frame.to_csv("original.csv", index=False)
    code, out, err = cli("reproduce", original.info.run_id, "--data", "original.csv")
    assert code == 0, out + err


def test_reproduce_weighs_the_git_commit(git_repo, data_dir, cli, client):
    shutil.copy(data_dir / "wine.csv", git_repo / "data.csv")
    (git_repo / "notes.txt").write_text("v1\n")
    git(git_repo, "add", "data.csv", "notes.txt", ".gitignore")
    git(git_repo, "commit", "-qm", "v1")
    code, _, err = cli("train", "data.csv", "--target", "target", "--model", "hist_gradient_boosting",
                       "--set", "model.params.max_iter=20")  # fmt: skip
    assert code == 0, err
    original = _only_run(client, "data")
    first_commit = original.data.tags["git.commit"]

    (git_repo / "notes.txt").write_text("v2\n")
    git(git_repo, "commit", "-qam", "v2")
    code, out, err = cli("reproduce", original.info.run_id, "--strict")
    assert code == 2 and first_commit[:12] in err and "--strict" in err
    code, out, err = cli("reproduce", original.info.run_id)
    assert code == 0, out + err  # same data and seed: the numbers still match; the commit is only warned about
    assert f"the run used {first_commit[:12]}" in err

    git(git_repo, "checkout", "-q", first_commit)
    code, out, err = cli("reproduce", original.info.run_id, "--strict")
    assert code == 0, out + err
    assert "git commit" not in err

    # A run recorded under other package versions (its env/requirements.txt says so): warned, --strict refuses.
    client.log_text(original.info.run_id, "# python 3.11\nscikit-learn==0.0.1\n", "env/requirements.txt")
    code, out, err = cli("reproduce", original.info.run_id, "--strict")
    assert code == 2 and "the run used 0.0.1" in err
    code, out, err = cli("reproduce", original.info.run_id)
    assert code == 0 and "scikit-learn is" in err


def test_presplit_test_data(workdir, data_dir, cli, client):
    frame = pd.read_csv(data_dir / "diabetes.csv")
    frame.iloc[:350].to_csv("train.csv", index=False)
    frame.iloc[350:].to_csv("test.csv", index=False)
    code, out, err = cli("train", "train.csv", "--test-data", "test.csv", "--target", "target",
                         "--metrics-file", "m.json", "--model-dir", "model")  # fmt: skip
    assert code == 0, err
    run = _only_run(client, "train")
    assert run.data.params["n_train_samples"] == "350" and run.data.params["n_test_samples"] == str(len(frame) - 350)
    assert run.data.params["test_data"] == "test.csv"
    assert run.data.tags["data.test_path"].endswith("test.csv") and len(run.data.tags["data.test_sha256"]) == 64
    written = json.loads((workdir / "m.json").read_text())
    assert written["test"]["rmse"] == pytest.approx(run.data.metrics["test_rmse"])
    import mlflow

    model = mlflow.pyfunc.load_model(str(workdir / "model"))
    assert len(model.predict(frame.drop(columns="target").head(3))) == 3
    code, out, err = cli("reproduce", run.info.run_id)
    assert code == 0, out + err

    frame.iloc[350:].drop(columns="bmi").to_csv("test.csv", index=False)
    code, _, err = cli("train", "train.csv", "--test-data", "test.csv", "--target", "target")
    assert code == 2 and "lacks 'bmi'" in err


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.multiprocess
def test_dvc_pipeline_end_to_end(tmp_path, data_dir):
    """init -> dvc add -> dvc repro -> a tracked run whose data.dvc_md5 is the raw file's .dvc md5; metrics show;
    a second repro runs nothing; dvc exp run --set-param makes a second run with the new value."""
    from mlflow import MlflowClient

    if shutil.which("git") is None:
        pytest.fail("git is required (.ci/run installs it)")
    project = tmp_path / "churn"
    project.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q", "-b", "main"], project, env)
    _run(["git", "config", "user.email", "t@example.com"], project, env)
    _run(["git", "config", "user.name", "t"], project, env)
    _run([*dvc, "init", "-q"], project, env)
    _run(["tabtrack", "init", ".", "--target", "target", "--data", str(data_dir / "breast_cancer.csv")], project, env)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["type"] == "random_forest" and params["target"] == "target"
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["validate", "prepare", "train"]
    _run([*dvc, "add", "-q", "data/breast_cancer.csv"], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "project"], project, env)

    _run([*dvc, "repro"], project, env)
    md5 = yaml.safe_load((project / "data/breast_cancer.csv.dvc").read_text())["outs"][0]["md5"]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = runs_of(client, "churn")
    assert run.info.status == "FINISHED"
    assert run.data.tags["data.dvc_md5"] == md5
    assert run.data.tags["data.source_path"].endswith("data/breast_cancer.csv")
    assert run.data.params["test_data"] == "data/prepared/test.parquet"
    assert (project / "models/model/MLmodel").is_file()
    assert json.loads((project / "reports/validation.json").read_text())["ok"] is True

    shown = _run([*dvc, "metrics", "show", "--json"], project, env)
    metrics = json.loads(shown)
    values = next(iter(metrics.values()))["data"]["metrics.json"]["data"]
    assert values["test"]["roc_auc"] == pytest.approx(run.data.metrics["test_roc_auc"])

    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "repro"], project, env)
    # The README's `git add -A` after `dvc repro` commits no store and no model files into git.
    committed = _run(["git", "ls-files"], project, env).split()
    assert (project / "mlruns").is_dir()
    assert not [p for p in committed if p.startswith(("mlruns/", "mlartifacts/", "mlflow.db", ".tabtrack/"))]
    again = _run([*dvc, "repro"], project, env)
    assert "Data and pipelines are up to date" in again
    assert len(runs_of(client, "churn")) == 1

    _run([*dvc, "exp", "run", "--set-param", "model.params.n_estimators=40"], project, env)
    runs = runs_of(client, "churn")
    assert len(runs) == 2
    newest = max(runs, key=lambda r: r.info.start_time)
    assert newest.data.params["n_estimators"] == "40" and run.data.params["n_estimators"] == "100"
    assert newest.data.tags.get("dvc.experiment")
    assert newest.data.tags["data.dvc_md5"] == md5  # same raw data version
