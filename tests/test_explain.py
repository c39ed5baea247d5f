"""SHAP explanations (`--explain`): additive in the explainer's own output space, summed back onto input
columns, logged by `train` and `Run.evaluate`, and never able to take a run down."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("shap")

from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from conftest import run_tabtrack, runs_of
from tabtrack.evaluate.explain import per_input_column, shap_values


def _data(classes: int = 2, rows: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.3, rows), np.linspace(-1, 1, classes - 1))
    return X, y


@pytest.mark.parametrize(
    ("estimator", "classes", "space"),
    [
        (RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0), 2, "probability"),
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), 2, "log-odds"),
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), 3, "log-odds"),
        (LogisticRegression(max_iter=500), 2, "log-odds"),
        (LogisticRegression(max_iter=500), 3, "log-odds"),
    ],
    ids=["forest", "boosting", "boosting-multiclass", "logistic", "logistic-multiclass"],
)
def test_values_add_up_to_the_output_in_the_explainers_space(estimator, classes, space):
    X, y = _data(classes)
    model = estimator.fit(X, y)
    values, expected, output = shap_values(model, X[:40], task="classification", background=X[:100])
    assert output == space
    target = model.predict_proba(X[:40]) if space == "probability" else model.decision_function(X[:40]).reshape(40, -1)
    if values.shape[2] == target.shape[1] - 1:  # a binary model explained as one output: the positive class
        target = target[:, 1:]
    assert values.shape == (40, 4, target.shape[1])
    if space == "log-odds" and isinstance(model, LogisticRegression) and classes > 2:
        # a multinomial model's log-odds are defined up to a shared shift: compare centred outputs
        target = target - target.mean(axis=1, keepdims=True)
        reconstructed = values.sum(axis=1) + expected
        reconstructed = reconstructed - reconstructed.mean(axis=1, keepdims=True)
    else:
        reconstructed = values.sum(axis=1) + expected
    np.testing.assert_allclose(reconstructed, target, atol=1e-6)


def test_one_hot_outputs_are_summed_back_onto_their_input_column():
    # features: age (numeric), then city one-hot into three: paris, lyon, other
    values = np.array([[0.5, 0.1, -0.3, 0.05], [-0.2, 0.0, 0.4, -0.1]])
    owners = ["age", "city", "city", "city"]
    summed = per_input_column(values, owners, ["city", "age"])
    np.testing.assert_allclose(summed, [[0.1 - 0.3 + 0.05, 0.5], [0.0 + 0.4 - 0.1, -0.2]])


CRASH_IN_THE_CHILD = """
import os, signal
from tabtrack import forked
assert forked.fork_safe()
crash = forked.Beside("crash", lambda: os.kill(os.getpid(), signal.SIGSEGV), redo_after_crash=False)
try:
    crash.result()  # getpid runs in the forked child
except forked.ChildFailed as exc:
    assert "crashed" in str(exc), exc
else:
    raise AssertionError("no ChildFailed")
try:
    forked.Beside("divide", lambda: 1 / 0, redo_after_crash=False).result()
except forked.ChildFailed as exc:
    assert "ZeroDivisionError" in str(exc), exc
else:
    raise AssertionError("no ChildFailed for the child's ZeroDivisionError")
assert forked.Beside("add", lambda a, b: a + b, 2, b=3).result() == 5
print("survived")
"""


def test_a_native_crash_in_the_explainers_child_is_an_error_not_the_end_of_the_process():
    """The explainer's child (forked.Beside, redo_after_crash=False): a crash there is ChildFailed here. In a fresh
    process, as a user's runs it: this test process may hold another test's threads, and would then not fork."""
    done = subprocess.run([sys.executable, "-c", CRASH_IN_THE_CHILD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "survived", done.stderr


def test_train_explain_logs_shap_per_input_column(workdir, data_dir, store_uri, client):
    done = run_tabtrack(
        "train", data_dir / "mixed.csv", "--target", "churn", "--model", "hist_gradient_boosting", "--explain",
        "--tracking-uri", store_uri, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run = runs_of(client, "mixed")[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["shap_explainer"] == "tree" and run.data.params["shap_output"] == "log-odds"
    assert int(run.data.params["shap_rows"]) == int(run.data.params["n_test_samples"])  # 80 rows: all of them
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/shap_summary.png", "plots/shap_importance.png"} <= paths
    csv = mlflow.artifacts.download_artifacts(
        f"runs:/{run.info.run_id}/reports/shap_importance.csv", tracking_uri=store_uri
    )
    table = pd.read_csv(csv)
    inputs = set(pd.read_csv(data_dir / "mixed.csv").columns) - {"churn"}
    assert set(table["feature"]) == inputs  # one row per input column: city's one-hot outputs summed
    assert (table["mean_abs_shap"].diff().dropna() <= 0).all()


def test_own_code_explanations_and_a_failed_one_as_a_warning_on_a_finished_run(workdir, store_uri, client):
    script = workdir / "own.py"
    script.write_text(
        "import numpy as np, pandas as pd, tabtrack\n"
        "from sklearn.compose import make_column_transformer\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import OneHotEncoder, StandardScaler\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "rng = np.random.default_rng(0)\n"
        "X = pd.DataFrame({'a': rng.normal(size=200), 'city': rng.choice(['paris', 'lyon'], 200)})\n"
        "y = (X['a'] > 0).astype(int)\n"
        "encode = make_column_transformer((OneHotEncoder(), ['city']), remainder='passthrough')\n"
        "model = make_pipeline(encode, LogisticRegression()).fit(X[:150], y[:150])\n"
        f"with tabtrack.start_run(experiment='own', tracking_uri={store_uri!r}) as run:\n"
        "    run.evaluate(model, X[150:], y[150:], explain=True)\n"
        "numeric = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[['a']][:150], y[:150])\n"
        f"with tabtrack.start_run(experiment='own', tracking_uri={store_uri!r}) as explained:\n"
        "    explained.evaluate(numeric, X[['a']][150:], y[150:], explain=True)\n"
        "print(explained.run_id)\n"
        "print(run.run_id)\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    explained_id, run_id = done.stdout.strip().splitlines()[-2:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "test_roc_auc" in run.data.metrics
    assert "cannot map" in run.data.params["shap_error"]
    assert "SHAP explanation skipped" in done.stderr
    # a user's pipeline on numeric inputs is explained whole, model-agnostically
    explained = client.get_run(explained_id)
    assert explained.data.params["shap_explainer"] == "permutation" and "shap_error" not in explained.data.params
    assert "plots/shap_summary.png" in {a.path for a in client.list_artifacts(explained_id, "plots")}
