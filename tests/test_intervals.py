"""Conformal prediction intervals and sets (`--intervals 0.9`): calibrated on training rows held out of the fit,
checked on the test split, and answered by `tabtrack predict`, `tabtrack serve`, `mlflow.pyfunc` and
`mlflow models predict`, on the raw file's rows of real tables. The coverage promise itself is checked on four real
regression tables over seeds (benchmarks/intervals.py prints the 20-seed figures)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

import real_tables
import tabtrack
from conftest import TABTRACK, free_port, run_tabtrack, runs_of, wait_for_http
from tabtrack.evaluate.conformal import calibrate, coverage
from tabtrack_runtime.intervals import bounds, prediction_sets


def test_split_conformal_holds_its_level_on_average_and_sets_are_never_empty():
    """The quantile's rank: with 19 calibration rows at 0.9, an exchangeable new row is covered exactly 18/20 of
    the time; 2,000 seeded draws of a linear model with heavy-tailed noise land within a point of 0.9."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    covered = []
    for _ in range(2000):
        X = rng.normal(size=(40, 2))
        y = X @ [2.0, -1.0] + rng.standard_t(3, size=40)
        model = LinearRegression().fit(X[:20], y[:20])
        calibration = calibrate(model, X[20:39], y[20:39], task="regression", classes=None, level=0.9)
        lower, upper = bounds(calibration, model.predict(X[39:]))
        covered.append(lower[0] <= y[39] <= upper[0])
    assert calibration["rows"] == 19
    assert np.mean(covered) == pytest.approx(0.9, abs=0.01)
    sets = prediction_sets({"quantile": 0.05}, np.array([[0.5, 0.3, 0.2], [0.2, 0.8, 0.0]]), ["a", "b", "c"])
    assert sets == [["a"], ["b"]]  # no class reaches 0.95: the most probable one alone, never an empty set
    sets = prediction_sets({"quantile": 0.75}, np.array([[0.5, 0.3, 0.2], [0.2, 0.8, 0.0]]), ["a", "b", "c"])
    assert sets == [["a", "b"], ["b"]]  # most probable first
    measured = coverage({"task": "classification", "quantile": 0.75}, ["b", "a"],
                        None, np.array([[0.5, 0.3, 0.2], [0.2, 0.8, 0.0]]), ["a", "b", "c"])  # fmt: skip
    assert measured == {"interval_coverage": 0.5, "interval_width": 1.5}


@pytest.mark.slow
def test_coverage_on_a_housing_table_and_three_real_regression_tables(tmp_path):
    """The mean test-split coverage over seeds (each its own split, calibration rows and model) within 3 points
    of 0.9. Small tables get more seeds: one test split of 102 rows varies by about 4 points on its own."""
    seeds = {"boston": 12, "cps1985": 12, "diamonds": 3, "doctorcontacts": 3}
    targets = {"boston": "medv", "cps1985": "wage", "diamonds": "price", "doctorcontacts": "mdu"}
    for name, count in seeds.items():
        path = real_tables.write(real_tables.TABLES[name], tmp_path)
        held = [
            tabtrack.train(path, target=targets[name], model="hist_gradient_boosting", random_state=seed,
                           intervals=0.9, track=False, overrides=["drop_columns=[rownames]"],
                           ).metrics["test"]["interval_coverage"]
            for seed in range(count)
        ]  # fmt: skip
        assert np.mean(held) == pytest.approx(0.9, abs=0.03), (name, held)


def _test_rows(run_id: str, raw: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """The run's test rows of the raw file, from the row ids its test predictions keep."""
    table = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation/test_predictions.csv")))
    rows = raw.loc[table["row"]]
    return rows.drop(columns=[target]), rows[target]


@pytest.mark.multiprocess
def test_regression_intervals_through_predict_pyfunc_and_the_run(workdir):
    """`tabtrack train --intervals 0.9` on Boston's raw file: the recorded coverage is what MLflow's own pyfunc of
    `model_intervals` gives on the test rows, and `tabtrack predict` writes the same bounds."""
    path = real_tables.write(real_tables.TABLES["boston"], workdir)
    done = run_tabtrack("train", path, "-t", "medv", "--intervals", "0.9", "--set", "drop_columns=[rownames]",
                        "--register", "homes", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "intervals: runs:/" in done.stdout and "meant to hold for 90% of rows" in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    run = runs_of(mlflow.MlflowClient(), "boston")[0]
    params, metrics = run.data.params, run.data.metrics
    assert params["intervals"] == "0.9" and params["calibration_size"] == "0.2"
    assert int(params["n_calibration_samples"]) + int(params["n_train_samples"]) == 404  # the training split
    raw = real_tables.read(path)
    X_test, y_test = _test_rows(run.info.run_id, raw, "medv")
    assert len(y_test) == int(params["n_test_samples"]) == 102

    answers = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model_intervals").predict(X_test)
    assert list(answers.columns) == ["prediction", "lower", "upper"]
    inside = (answers["lower"] <= y_test.to_numpy()) & (y_test.to_numpy() <= answers["upper"])
    assert metrics["test_interval_coverage"] == pytest.approx(inside.mean())
    assert metrics["test_interval_width"] == pytest.approx((answers["upper"] - answers["lower"]).mean())
    info = mlflow.models.get_model_info("models:/homes/1")
    assert info.metadata["tabtrack_intervals"]["level"] == 0.9

    done = run_tabtrack("predict", "models:/homes/1", path, "-o", workdir / "scored.csv", cwd=workdir)
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(workdir / "scored.csv").loc[X_test.index]
    np.testing.assert_allclose(scored["lower"], answers["lower"])
    np.testing.assert_allclose(scored["upper"], answers["upper"])
    np.testing.assert_allclose(scored["prediction"], answers["prediction"])
    done = run_tabtrack("card", "models:/homes/1", "-o", workdir / "card.md", cwd=workdir)
    assert done.returncode == 0, done.stderr
    card = (workdir / "card.md").read_text()
    assert "## Prediction intervals" in card and f"it held for {metrics['test_interval_coverage']:.1%}" in card


@pytest.mark.multiprocess
def test_prediction_sets_through_serve_and_mlflow_models_predict(workdir):
    """A binary classifier on the raw Titanic file (text, gaps, a float with gaps): `tabtrack serve` answers each
    row with its prediction set and the level, MLflow's own `mlflow models predict` answers the same sets from
    `model_intervals`, and the recorded coverage is what those sets give on the test rows."""
    path = real_tables.write(real_tables.TABLES["titanicsurvival"], workdir)
    done = run_tabtrack("train", path, "-t", "survived", "--model", "logistic_regression", "--intervals", "0.9",
                        "--set", "drop_columns=[rownames]", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    run = runs_of(mlflow.MlflowClient(), "titanicsurvival")[0]
    raw = real_tables.read(path)
    X_test, y_test = _test_rows(run.info.run_id, raw, "survived")

    rows = workdir / "rows.csv"
    X_test.to_csv(rows, index=False)
    uri = f"runs:/{run.info.run_id}/model_intervals"
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", uri, "-i", rows, "-t", "csv",
         "-o", workdir / "out.json", "--env-manager", "local"],
        cwd=workdir, capture_output=True, text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": store},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answers = pd.DataFrame(json.loads((workdir / "out.json").read_text())["predictions"])
    sets = answers["prediction_set"].tolist()
    assert all(answer in chosen for answer, chosen in zip(answers["prediction"], sets, strict=True))
    assert {len(s) for s in sets} == {1, 2}  # sure rows and unsure ones
    held = np.mean([label in chosen for label, chosen in zip(y_test, sets, strict=True)])
    assert run.data.metrics["test_interval_coverage"] == pytest.approx(held)
    assert abs(held - 0.9) < 0.05  # 262 test rows

    port = free_port()
    server = subprocess.Popen(
        [TABTRACK, "serve", f"runs:/{run.info.run_id}/model", "--port", str(port), "--tracking-uri", store,
         "--log-predictions", "off"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, what="tabtrack serve")
        records = json.loads(X_test.head(40).to_json(orient="records"))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", headers={"content-type": "application/json"},
                                         data=json.dumps({"records": records}).encode())  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert body["interval_level"] == 0.9
    assert body["prediction_sets"] == sets[:40]
    done = run_tabtrack("predict", f"runs:/{run.info.run_id}/model", rows, "-o", workdir / "scored.csv",
                        "--log-predictions", "off", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(workdir / "scored.csv")["prediction_set"].tolist() == ["|".join(s) for s in sets]


def test_own_code_door_calibrates_on_rows_the_user_holds_out(workdir):
    """`run.evaluate(model, X_test, y_test, intervals=0.9, calibration=(X_cal, y_cal))` in a fresh process records
    what `train --intervals` records; a missing half is one line."""
    script = workdir / "own.py"
    script.write_text(
        "import sys, tabtrack, pandas as pd\n"
        "from sklearn.ensemble import HistGradientBoostingRegressor\n"
        "frame = pd.read_csv(sys.argv[1]).drop(columns=['rownames'])\n"
        "X, y = frame.drop(columns=['medv']), frame['medv']\n"
        "fit, cal, test = slice(0, 300), slice(300, 400), slice(400, None)\n"
        "model = HistGradientBoostingRegressor(random_state=0).fit(X[fit], y[fit])\n"
        "with tabtrack.start_run(experiment='own') as run:\n"
        "    if sys.argv[2] == 'bad':\n"
        "        run.evaluate(model, X[test], y[test], intervals=0.9)\n"
        "    result = run.evaluate(model, X[test], y[test], intervals=0.9, calibration=(X[cal], y[cal]))\n"
        "print(result.metrics['test']['interval_coverage'], run.run_id)\n"
    )
    path = real_tables.write(real_tables.TABLES["boston"], workdir)
    done = subprocess.run([sys.executable, script, path, "good"], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    held, run_id = done.stdout.split()[-2:]
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["test_interval_coverage"] == pytest.approx(float(held))
    assert run.data.params["n_calibration_samples"] == "100"
    answers = mlflow.pyfunc.load_model(f"runs:/{run_id}/model_intervals").predict(
        real_tables.read(path).drop(columns=["rownames", "medv"]).tail(5)
    )
    assert (answers["lower"] < answers["prediction"]).all() and (answers["prediction"] < answers["upper"]).all()
    done = subprocess.run([sys.executable, script, path, "bad"], cwd=workdir, capture_output=True, text=True)
    assert done.returncode != 0 and "needs calibration=(X_cal, y_cal)" in done.stderr


def test_bad_interval_settings_are_one_line_and_exit_2(workdir, data_dir):
    done = run_tabtrack("train", data_dir / "diabetes.csv", "-t", "target", "--intervals", "1.5", cwd=workdir)
    assert done.returncode == 2 and "intervals" in done.stderr and "Traceback" not in done.stderr
    done = run_tabtrack("train", data_dir / "diabetes.csv", "-t", "target", "--intervals", "0.99",
                        "--set", "calibration_size=0.05", cwd=workdir)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        "intervals=0.99 needs at least 99 calibration rows" in done.stderr and "raise calibration_size" in done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1
