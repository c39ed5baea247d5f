"""The benchmark workloads still run: they are timed only by `python -m benchmarks`, never here, but a
workload that breaks (a type MLflow's skops saving refuses, say) would silently stop the suite."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import generated_classification
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def _workload(mode: str, data: Path, model: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.workloads", mode, str(data), model],
        cwd=data.parent, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_bare_workload_fits_the_preprocessing_tabtrack_fits_and_scores(tmp_path):
    data = generated_classification(tmp_path / "small.csv", rows=400, features=6)
    done = _workload("bare", data, "hist_gradient_boosting")
    scores = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert set(scores) == {"accuracy", "f1", "roc_auc"}
    assert 0.6 < scores["roc_auc"] <= 1.0


def test_autolog_workload_records_a_model_and_its_evaluation(tmp_path):
    data = generated_classification(tmp_path / "small.csv", rows=400, features=6)
    _workload("autolog", data, "random_forest")
    client = MlflowClient(f"sqlite:///{tmp_path / 'autolog.db'}")
    experiment = client.get_experiment_by_name("autolog")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    # autolog's training metrics and evaluate's test metrics and plots: what the overhead ratio compares with
    assert {"training_accuracy_score", "accuracy_score", "roc_auc", "log_loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "roc_curve_plot.png", "calibration_curve_plot.png"} <= artifacts
    assert client.search_logged_models([experiment.experiment_id])
