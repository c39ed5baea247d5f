"""A real `train` into a real SQLite MLflow store, read back with MlflowClient."""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

import tabtrack
from conftest import git

SETTINGS = {
    "model_type", "task", "target", "test_size", "random_state", "cv_folds",
    "n_features", "n_train_samples", "n_test_samples",
}  # fmt: skip


def _split(path, target, *, stratify: bool, seed=42, test_size=0.2):
    frame = pd.read_csv(path)
    X, y = frame.drop(columns=[target]), frame[target]
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y if stratify else None)


def test_classification_run_records_the_standard(git_repo, data_dir, client, store_uri):
    data = git_repo / "cancer.csv"
    data.write_bytes((data_dir / "breast_cancer.csv").read_bytes())
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-qm", "data")

    result = tabtrack.train(
        data, target="target", model="random_forest", params={"max_depth": 5, "n_estimators": 50},
        cv=3, tags={"stage": "candidate"}, tracking_uri=store_uri,
    )  # fmt: skip

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("random_forest_") and len(run.info.run_name) == len("random_forest_") + 15
    assert client.get_experiment(run.info.experiment_id).name == "cancer"

    # params: every estimator hyperparameter plus the settings, with correct values
    params = run.data.params
    assert set(params) >= SETTINGS
    assert set(result.pipeline.named_steps["model"].get_params(deep=False)) <= set(params)
    assert params["max_depth"] == "5" and params["n_estimators"] == "50" and params["random_state"] == "42"
    assert params["model_type"] == "random_forest" and params["task"] == "classification"
    assert params["target"] == "target" and params["test_size"] == "0.2" and params["cv_folds"] == "3"
    assert (params["n_features"], params["n_train_samples"], params["n_test_samples"]) == ("30", "455", "114")

    # tags: lineage
    tags = run.data.tags
    assert tags["tabtrack.version"] == tabtrack.__version__
    assert tags["git.commit"] == git(git_repo, "rev-parse", "HEAD")
    assert tags["git.branch"] == "main" and tags["git.dirty"] == "false"
    assert tags["data.path"] == str(data.resolve())
    assert tags["data.sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert "data.dvc_md5" not in tags
    assert tags["env.python"].count(".") == 2 and tags["env.os"]
    assert tags["stage"] == "candidate"

    # test metrics recomputed independently from the logged model on a fresh split
    X_train, X_test, y_train, y_test = _split(data, "target", stratify=True)
    loaded = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    predictions = np.asarray(loaded.predict(X_test.astype("float64")))
    np.testing.assert_array_equal(predictions, result.pipeline.predict(X_test))
    proba = result.pipeline.predict_proba(X_test)[:, 1]
    m = run.data.metrics
    assert m["test_accuracy"] == pytest.approx(skm.accuracy_score(y_test, predictions))
    assert m["test_f1"] == pytest.approx(skm.f1_score(y_test, predictions))
    assert m["test_precision"] == pytest.approx(skm.precision_score(y_test, predictions))
    assert m["test_recall"] == pytest.approx(skm.recall_score(y_test, predictions))
    assert m["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y_test, proba))
    assert m["test_pr_auc"] == pytest.approx(skm.average_precision_score(y_test, proba))
    assert m["test_log_loss"] == pytest.approx(skm.log_loss(y_test, result.pipeline.predict_proba(X_test)))
    assert m["train_accuracy"] == pytest.approx(skm.accuracy_score(y_train, result.pipeline.predict(X_train)))
    assert m["test_roc_auc"] > 0.97
    assert result.metrics["test"]["roc_auc"] == m["test_roc_auc"]

    # CV: one child per fold, mean/std on the parent
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["fold_1", "fold_2", "fold_3"]
    assert sorted(c.data.params["fold"] for c in children) == ["1", "2", "3"]
    assert all(c.info.status == "FINISHED" for c in children)
    fold_acc = [c.data.metrics["cv_accuracy"] for c in children]
    assert m["cv_accuracy_mean"] == pytest.approx(np.mean(fold_acc))
    assert m["cv_accuracy_std"] == pytest.approx(np.std(fold_acc))
    assert sorted(result.fold_run_ids) == sorted(c.info.run_id for c in children)

    # datasets: the file itself (its sha256 as digest), train and test with digest and source
    inputs = {next(t.value for t in d.tags): d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"source", "training", "test"}
    assert all(d.digest for d in inputs.values())
    assert str(data.resolve()) in inputs["training"].source
    assert json.loads(inputs["test"].profile)["num_rows"] == 114

    # artifacts
    resolved = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{result.run_id}/config/resolved.yaml"))
    assert resolved["model"] == {"type": "random_forest", "params": {"max_depth": 5, "n_estimators": 50}}
    assert resolved["cv_folds"] == 3 and resolved["random_state"] == 42
    requirements = mlflow.artifacts.load_text(f"runs:/{result.run_id}/env/requirements.txt")
    assert f"scikit-learn=={metadata.version('scikit-learn')}" in requirements
    assert f"mlflow=={metadata.version('mlflow')}" in requirements
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/reports/classification_report.json"))
    assert report["accuracy"] == pytest.approx(m["test_accuracy"])
    assert "precision" in mlflow.artifacts.load_text(f"runs:/{result.run_id}/reports/classification_report.txt")

    # the model: a LoggedModel linked to the run, with signature and input example
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [lm.source_run_id for lm in models] == [result.run_id]
    info = mlflow.models.get_model_info(result.model_uri)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(X_test.columns)
    assert info.saved_input_example_info is not None


def test_regression_run_metrics_match_an_independent_computation(workdir, data_dir, client, store_uri):
    data = data_dir / "diabetes.csv"
    result = tabtrack.train(data, target="target", model="ridge", tracking_uri=store_uri, experiment="reg")
    run = client.get_run(result.run_id)
    assert run.data.params["task"] == "regression" and run.data.params["alpha"] == "1.0"
    _X_train, X_test, _y_train, y_test = _split(data, "target", stratify=False)
    predictions = mlflow.pyfunc.load_model(result.model_uri).predict(X_test)
    np.testing.assert_array_equal(np.asarray(predictions), result.pipeline.predict(X_test))
    m = run.data.metrics
    assert m["test_rmse"] == pytest.approx(skm.root_mean_squared_error(y_test, predictions))
    assert m["test_mae"] == pytest.approx(skm.mean_absolute_error(y_test, predictions))
    assert m["test_r2"] == pytest.approx(skm.r2_score(y_test, predictions))
    assert m["test_mape"] == pytest.approx(skm.mean_absolute_percentage_error(y_test, predictions))
    assert m["test_r2"] > 0.3
    assert {"train_rmse", "train_r2"} <= set(m) and not any(k.startswith("cv_") for k in m)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "reports")}
    assert "reports/classification_report.txt" not in artifacts


def test_train_metrics_on_a_sample_of_big_training_splits(workdir, data_dir, client, store_uri):
    """`train_metrics_rows` caps the training rows the train_* metrics score: a random sample seeded by
    random_state, recorded as a param; test metrics still use every test row."""
    data = data_dir / "diabetes.csv"
    result = tabtrack.train(
        data, target="target", model="ridge", tracking_uri=store_uri, overrides=["train_metrics_rows=100"]
    )
    run = client.get_run(result.run_id)
    X_train, X_test, y_train, y_test = _split(data, "target", stratify=False)
    assert run.data.params["train_metrics_rows"] == "100" and run.data.params["n_train_samples"] == str(len(X_train))
    rows = np.sort(np.random.default_rng(42).choice(len(X_train), 100, replace=False))
    sampled = result.pipeline.predict(X_train.iloc[rows])
    assert run.data.metrics["train_rmse"] == pytest.approx(skm.root_mean_squared_error(y_train.iloc[rows], sampled))
    whole = skm.root_mean_squared_error(y_train, result.pipeline.predict(X_train))
    assert run.data.metrics["train_rmse"] != pytest.approx(whole)  # so the sample was what got scored
    assert run.data.metrics["test_rmse"] == pytest.approx(
        skm.root_mean_squared_error(y_test, result.pipeline.predict(X_test))
    )
    # Under the cap (the default 200,000 here): every training row, and no param.
    default = client.get_run(tabtrack.train(data, target="target", model="ridge", tracking_uri=store_uri).run_id)
    assert "train_metrics_rows" not in default.data.params
    assert default.data.metrics["train_rmse"] == pytest.approx(whole)


def test_multiclass_metrics_are_macro_and_weighted(workdir, data_dir, store_uri, client):
    result = tabtrack.train(data_dir / "wine.csv", target="target", model="logistic_regression", tracking_uri=store_uri)
    m = client.get_run(result.run_id).data.metrics
    for name in ("f1_macro", "f1_weighted", "precision_macro", "recall_weighted", "roc_auc", "pr_auc", "log_loss"):
        assert f"test_{name}" in m
    assert "test_f1" not in m
    _, X_test, _, y_test = _split(data_dir / "wine.csv", "target", stratify=True)
    proba = result.pipeline.predict_proba(X_test)
    assert m["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y_test, proba, multi_class="ovr"))
    assert m["test_f1_macro"] == pytest.approx(skm.f1_score(y_test, result.pipeline.predict(X_test), average="macro"))


@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_logged_model_serves_raw_rows_with_categoricals_and_gaps(model, workdir, data_dir, store_uri):
    result = tabtrack.train(data_dir / "mixed.csv", target="churn", model=model, tracking_uri=store_uri)
    assert result.classes == ["no", "yes"]
    raw = pd.read_csv(data_dir / "mixed.csv").drop(columns=["churn"]).head(50)
    raw.loc[0, "city"] = "a city never seen in training"
    loaded = mlflow.pyfunc.load_model(result.model_uri)
    np.testing.assert_array_equal(np.asarray(loaded.predict(raw)), result.pipeline.predict(raw))
    assert result.metrics["test"]["accuracy"] > 0.6


def test_same_seed_gives_identical_metrics(workdir, data_dir):
    first = tabtrack.train(data_dir / "mixed.csv", target="churn", model="hist_gradient_boosting", track=False, cv=3)
    second = tabtrack.train(data_dir / "mixed.csv", target="churn", model="hist_gradient_boosting", track=False, cv=3)
    assert first.metrics == second.metrics
    other = tabtrack.train(
        data_dir / "mixed.csv", target="churn", model="hist_gradient_boosting", track=False, random_state=7
    )
    assert other.metrics["test"] != first.metrics["test"]


def test_parquet_input_and_task_override(workdir, data_dir, store_uri, client):
    path = workdir / "wine.parquet"
    pd.read_csv(data_dir / "wine.csv").to_parquet(path)
    result = tabtrack.train(path, target="target", task="regression", model="random_forest", tracking_uri=store_uri)
    assert result.task == "regression"
    assert client.get_run(result.run_id).data.params["task"] == "regression"
    assert "rmse" in result.metrics["test"]


def test_rows_with_empty_target_are_dropped_with_a_warning(workdir, data_dir, store_uri, client, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("tabtrack"), "propagate", True)  # an in-process CLI test may have set it off
    frame = pd.read_csv(data_dir / "diabetes.csv")
    frame.loc[:9, "target"] = np.nan
    frame.to_csv(workdir / "gaps.csv", index=False)
    result = tabtrack.train(workdir / "gaps.csv", target="target", model="ridge", tracking_uri=store_uri)
    params = client.get_run(result.run_id).data.params
    assert params["n_dropped_target_rows"] == "10"
    assert int(params["n_train_samples"]) + int(params["n_test_samples"]) == len(frame) - 10
    assert "dropped 10 row(s)" in caplog.text


def test_config_file_and_overrides_layer_in_order(workdir, data_dir, store_uri, client):
    config = workdir / "tabtrack.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(data_dir / "diabetes.csv"),
                "target": "target",
                "model": {"type": "random_forest", "params": {"max_depth": 3, "n_estimators": 20}},
                "experiment": "from_config",
                "tags": {"owner": "ds"},
            }
        )
    )
    result = tabtrack.train(
        config=config, overrides=["model.params.max_depth=6", "test_size=0.3"], tracking_uri=store_uri
    )
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "from_config"
    assert run.data.params["max_depth"] == "6" and run.data.params["n_estimators"] == "20"
    assert run.data.params["test_size"] == "0.3" and run.data.tags["owner"] == "ds"


def test_dvc_tracked_file_records_dvc_md5(git_repo, data_dir, store_uri, client):
    import subprocess
    import sys

    data = git_repo / "data.csv"
    data.write_bytes((data_dir / "diabetes.csv").read_bytes())
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=git_repo, check=True)
    subprocess.run([*dvc, "add", "-q", "data.csv"], cwd=git_repo, check=True)
    recorded = yaml.safe_load((git_repo / "data.csv.dvc").read_text())["outs"][0]["md5"]
    assert recorded == hashlib.md5(data.read_bytes()).hexdigest()

    result = tabtrack.train(data, target="target", model="ridge", tracking_uri=store_uri)
    tags = client.get_run(result.run_id).data.tags
    assert tags["data.dvc_md5"] == recorded
    assert tags["data.dvc_file"].endswith("data.csv.dvc")


def test_dirty_work_tree_is_flagged(git_repo, data_dir, store_uri, client):
    (git_repo / "train.py").write_text("print(1)\n")
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-qm", "code")
    (git_repo / "train.py").write_text("print(2)\n")
    result = tabtrack.train(data_dir / "diabetes.csv", target="target", model="ridge", tracking_uri=store_uri)
    assert client.get_run(result.run_id).data.tags["git.dirty"] == "true"


@pytest.mark.fresh_store
def test_no_track_touches_no_store(workdir, data_dir, cli):
    code, out, err = cli("train", data_dir / "diabetes.csv", "--target", "target", "--model", "ridge", "--no-track")
    assert code == 0, err
    assert "test" in out and "rmse" in out and "not tracked" in out
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlruns").exists()
