"""Every model family on bundled data: trains, logs, reloads through pyfunc with identical predictions,
clears a sanity floor; plus the family-specific behaviour (XGBoost's class weighting, the MLP's epochs)."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

import tabtrack
from conftest import mixed_frame, require
from real_tables import TABLES
from real_tables import write as write_table

FAMILIES = {
    "logistic_regression": None,
    "ridge": None,
    "random_forest": None,
    "hist_gradient_boosting": None,
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "mlp": "torch",
}
FAST = {"mlp": ["model.params.epochs=60", "model.params.patience=8"], "xgboost": ["model.params.n_estimators=100"]}
# (dataset, metric, floor): ROC-AUC / F1 / R^2 a working model clears with room to spare
FLOORS = {"breast_cancer": ("roc_auc", 0.97), "wine": ("f1_macro", 0.85), "diabetes": ("r2", 0.25)}
NATIVE = {"xgboost": "xgboost", "lightgbm": "lightgbm", "mlp": "pytorch"}


def _test_split(path, target="target", stratify=True):
    frame = pd.read_csv(path)
    X, y = frame.drop(columns=[target]), frame[target]
    return train_test_split(X, y, test_size=0.2, random_state=42, stratify=y if stratify else None)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine", "diabetes"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_logs_and_serves(family, dataset, workdir, data_dir, store_uri, client):
    if FAMILIES[family]:
        require(FAMILIES[family])
    task = "regression" if dataset == "diabetes" else "classification"
    if (family, task) in {("ridge", "classification"), ("logistic_regression", "regression")}:
        pytest.skip("family does not support this task")
    result = tabtrack.train(
        data_dir / f"{dataset}.csv",
        target="target",
        model=family,
        tracking_uri=store_uri,
        overrides=FAST.get(family, []),
    )
    metric, floor = FLOORS[dataset]
    assert result.metrics["test"][metric] >= floor, result.metrics["test"]
    if family in ("xgboost", "lightgbm", "hist_gradient_boosting") and dataset == "breast_cancer":
        assert result.metrics["test"]["roc_auc"] >= 0.98

    _, X_test, _, _ = _test_split(data_dir / f"{dataset}.csv", stratify=task == "classification")
    served = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model").predict(X_test.astype("float64"))
    np.testing.assert_array_equal(np.asarray(served), result.pipeline.predict(X_test))
    if task == "classification":
        reloaded = mlflow.sklearn.load_model(result.model_uri)
        np.testing.assert_allclose(reloaded.predict_proba(X_test), result.pipeline.predict_proba(X_test), rtol=1e-6)

    models = mlflow.search_logged_models(
        experiment_ids=[client.get_run(result.run_id).info.experiment_id], output_format="list"
    )
    names = sorted(m.name for m in models if m.source_run_id == result.run_id)
    assert names == (["model", "model_native"] if family in NATIVE else ["model"])
    if family in NATIVE:
        native_uri = next(m.model_uri for m in models if m.name == "model_native" and m.source_run_id == result.run_id)
        flavor = getattr(mlflow, NATIVE[family])
        assert flavor.load_model(native_uri) is not None


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "mlp"])
def test_same_seed_same_metrics(family, workdir, data_dir):
    require(FAMILIES[family])
    runs = [
        tabtrack.train(
            data_dir / "mixed.csv", target="churn", model=family, track=False, overrides=FAST.get(family, [])
        )
        for _ in range(2)
    ]
    assert runs[0].metrics == runs[1].metrics


def test_xgboost_speaks_the_users_labels_and_weights_imbalance(workdir, store_uri, client):
    require("xgboost")
    frame = mixed_frame(600)
    keep = (frame["churn"] == "no") | (np.arange(len(frame)) % 4 == 0)  # make "yes" rare
    frame = frame[keep]
    frame.to_csv(workdir / "rare.csv", index=False)
    result = tabtrack.train(workdir / "rare.csv", target="churn", model="xgboost", tracking_uri=store_uri)
    assert set(np.unique(result.pipeline.predict(frame.drop(columns=["churn"])))) <= {"no", "yes"}
    params = client.get_run(result.run_id).data.params
    y_train = train_test_split(frame, frame["churn"], test_size=0.2, random_state=42, stratify=frame["churn"])[2]
    counts = y_train.value_counts()
    assert float(params["scale_pos_weight"]) == pytest.approx(counts["no"] / counts["yes"])
    assert params["eval_metric"] == "logloss" and params["device"] == "cpu"


def test_balanced_data_gets_no_scale_pos_weight(workdir, data_dir, store_uri, client):
    require("xgboost")
    frame = pd.read_csv(data_dir / "breast_cancer.csv")
    balanced = pd.concat([frame[frame.target == 0], frame[frame.target == 1].head(212)])
    balanced.to_csv(workdir / "balanced.csv", index=False)
    result = tabtrack.train(workdir / "balanced.csv", target="target", model="xgboost", tracking_uri=store_uri)
    assert client.get_run(result.run_id).data.params["scale_pos_weight"] == "None"


def test_mlp_logs_every_epoch_and_stops_early(workdir, data_dir, store_uri, client):
    require("torch")
    result = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="mlp", tracking_uri=store_uri,
        overrides=["model.params.epochs=400", "model.params.patience=5", "model.params.hidden_layers=[32, 16]"],
    )  # fmt: skip
    run = client.get_run(result.run_id)
    n_epochs = int(run.data.metrics["n_epochs"])
    assert n_epochs < 400, "early stopping should stop well before the epoch budget on an easy set"
    for key in ("train_loss", "val_loss", "val_accuracy"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, n_epochs + 1)), key
    assert 1 <= run.data.metrics["best_epoch"] <= n_epochs - 5 + 1
    assert run.data.params["hidden_layers"] == "[32, 16]" and run.data.params["device"] == "cpu"
    assert "plots/loss_curve.png" in {a.path for a in client.list_artifacts(result.run_id, "plots")}


def test_mlp_regression_history_uses_rmse(workdir, data_dir, store_uri, client):
    require("torch")
    result = tabtrack.train(
        data_dir / "diabetes.csv", target="target", model="mlp", tracking_uri=store_uri, overrides=FAST["mlp"]
    )
    history = client.get_metric_history(result.run_id, "val_rmse")
    assert len(history) == int(client.get_run(result.run_id).data.metrics["n_epochs"])
    assert all(40 < m.value < 250 for m in history[-3:])  # in target units, not standardised ones


@pytest.mark.parametrize("model", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_sklearn_families_take_class_weight_balanced(model, workdir, data_dir, store_uri, client):
    result = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model=model, tracking_uri=store_uri,
        overrides=["model.params.class_weight=balanced"],
    )  # fmt: skip
    assert client.get_run(result.run_id).data.params["class_weight"] == "balanced"


def test_device_errors_are_user_errors(workdir, data_dir, cli):
    require("torch")
    import torch

    code, _, err = cli(
        "train", data_dir / "wine.csv", "--target", "target", "--model", "random_forest", "--set", "device=cuda"
    )
    assert code == 2 and "trains on the CPU only" in err
    if not torch.cuda.is_available():
        code, _, err = cli("train", data_dir / "wine.csv", "--target", "target", "--model", "mlp", "--device", "cuda")
        assert code == 2 and "no CUDA device is visible" in err


def _imported_torch(importtime_stderr: str) -> bool:
    """Whether `python -X importtime` imported torch itself (a failed attempt under another name does not count)."""
    return any(line.split("|")[-1].strip() == "torch" for line in importtime_stderr.splitlines() if "|" in line)


@pytest.mark.multiprocess
def test_torch_is_imported_only_by_the_models_that_use_it(workdir):
    """Fresh processes, as users run them: an XGBoost `train` and a `predict` of its model never import torch
    (~2.5 s; no NVIDIA driver here, and skops' import is kept from it); an MLP model, loaded the same way,
    imports torch to predict and gives the predictions of the process that trained it."""
    for module in ("xgboost", "torch"):
        require(module)
    path = write_table(TABLES["penguins"], workdir)
    drop = ["--set", "drop_columns=[rownames]"]

    def tabtrack_cli(*args) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tabtrack", *map(str, args)], cwd=workdir,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    trained = tabtrack_cli(
        "train", path, "--target", "species", "--model", "xgboost", *drop, *("--set", "model.params.n_estimators=30")
    )
    assert not _imported_torch(trained.stderr)
    run_id = next(line.split()[2] for line in trained.stdout.splitlines() if line.startswith("run id:"))
    predicted = tabtrack_cli("predict", f"runs:/{run_id}/model", path, "-o", "xgb.csv")
    assert not _imported_torch(predicted.stderr)
    assert pd.read_csv(workdir / "xgb.csv")["prediction"].isin(["Adelie", "Chinstrap", "Gentoo"]).all()

    mlp = tabtrack.train(
        path, target="species", model="mlp", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        overrides=["drop_columns=[rownames]", *FAST["mlp"]],
    )  # fmt: skip
    predicted = tabtrack_cli("predict", mlp.model_uri, path, "-o", "mlp.csv")
    assert _imported_torch(predicted.stderr)
    expected = mlp.pipeline.predict(pd.read_csv(path))
    np.testing.assert_array_equal(pd.read_csv(workdir / "mlp.csv")["prediction"].to_numpy(), expected)
