"""Every family `tabtrack families` lists, trained the way users run it: the installed `tabtrack` console
script in a subprocess, against the embedded SQLite store, on a real table (integers with gaps, text with
gaps); the run is read back FINISHED and its model predicts the raw file's rows through `mlflow.pyfunc`."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

import real_tables
from conftest import require, run_tabtrack

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
EXTRA = {"xgboost": "xgboost", "lightgbm": "lightgbm", "mlp": "torch"}
FAST = {"mlp": ["--set", "model.params.epochs=30"], "xgboost": ["--set", "model.params.n_estimators=50"],
        "lightgbm": ["--set", "model.params.n_estimators=50"]}  # fmt: skip


def _families(tmp_path) -> list[str]:
    listed = run_tabtrack("families", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def test_families_lists_the_seven_families(tmp_path):
    assert _families(tmp_path) == [
        "hist_gradient_boosting", "lightgbm", "logistic_regression", "mlp", "random_forest", "ridge", "xgboost",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "family",
    ["hist_gradient_boosting", "lightgbm", "logistic_regression", "mlp", "random_forest", "ridge", "xgboost"],
)
def test_family_through_the_console_script(family, tmp_path):
    if family in EXTRA:
        require(EXTRA[family])
    # ridge is regression only; penguins is sorted by species, so its row number leaks the class: drop it.
    table = real_tables.TABLES["cps1985" if family == "ridge" else "penguins"]
    path = real_tables.write(table, tmp_path)
    done = run_tabtrack(
        "train", path, "--target", table.target, "--model", family, "--experiment", "families",
        "--set", "drop_columns=[rownames]", *FAST.get(family, []), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("families").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model_type"] == family and f"test_{'r2' if family == 'ridge' else 'accuracy'}" in (
        run.data.metrics
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    raw = real_tables.read(path).drop(columns=[table.target])
    predictions = np.asarray(model.predict(raw))
    assert len(predictions) == len(raw)
    if family != "ridge":
        assert set(predictions) <= {"Adelie", "Chinstrap", "Gentoo"}
        # well above the majority class (44%): a working model, not a tuned one
        assert (predictions == real_tables.read(path)[table.target].to_numpy()).mean() > 0.7
