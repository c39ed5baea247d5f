"""Evaluation evidence on real runs: plots, reports, importance, threshold and custom metrics, HTML report."""

from __future__ import annotations

import gc
import json
import re
import tracemalloc

import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

import tabtrack
from tabtrack.errors import TabtrackError

CLASSIFICATION_PLOTS = {
    "confusion_matrix", "confusion_matrix_normalized", "roc_curve", "pr_curve", "calibration_curve", "feature_importance",
}  # fmt: skip
REGRESSION_PLOTS = {"residuals", "predicted_vs_actual", "residual_histogram", "feature_importance"}


def _artifacts(client, run_id, path=None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def _assert_png_has_content(run_id: str, path: str) -> None:
    image = mpimg.imread(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert float(image[..., :3].std()) > 0.05, f"{path} looks blank"


@pytest.mark.parametrize(
    ("dataset", "model", "plots"),
    [
        ("breast_cancer", "logistic_regression", CLASSIFICATION_PLOTS),
        ("wine", "random_forest", CLASSIFICATION_PLOTS),
        ("mixed", "hist_gradient_boosting", CLASSIFICATION_PLOTS),
        ("diabetes", "ridge", REGRESSION_PLOTS),
        ("diabetes", "hist_gradient_boosting", REGRESSION_PLOTS),
    ],
)
def test_artifacts_per_task_and_family(dataset, model, plots, workdir, data_dir, store_uri, client):
    target = "churn" if dataset == "mixed" else "target"
    result = tabtrack.train(data_dir / f"{dataset}.csv", target=target, model=model, tracking_uri=store_uri)
    assert _artifacts(client, result.run_id, "plots") == {f"plots/{p}.png" for p in plots}
    for plot in plots:
        _assert_png_has_content(result.run_id, f"plots/{plot}.png")
    reports = _artifacts(client, result.run_id, "reports")
    assert "reports/feature_importance.csv" in reports
    assert "report.html" in _artifacts(client, result.run_id)
    if plots is CLASSIFICATION_PLOTS:
        report = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/reports/classification_report.json"))
        assert report["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
        assert {str(c) for c in result.classes} <= set(report)
    else:
        assert "reports/classification_report.json" not in reports


def test_feature_importance_is_per_input_column(workdir, data_dir, store_uri):
    for model in ("logistic_regression", "random_forest", "hist_gradient_boosting"):
        result = tabtrack.train(data_dir / "mixed.csv", target="churn", model=model, tracking_uri=store_uri)
        table = pd.read_csv(
            mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="reports/feature_importance.csv")
        )
        assert sorted(table["feature"]) == ["age", "city", "income", "plan"], model
        assert list(table["importance"]) == sorted(table["importance"], reverse=True)
        # the informative columns (age, plan) outrank noise (city)
        rank = {f: i for i, f in enumerate(table["feature"])}
        assert rank["plan"] < rank["city"] and rank["age"] < rank["city"], (model, table)
        method = mlflow.get_run(result.run_id).data.params["feature_importance_method"]
        assert method == ("permutation" if model == "hist_gradient_boosting" else "native")


def test_native_importance_is_the_estimators_own_summed_per_input_column():
    """Read in this thread (no joblib pool), the forest's importances are still scikit-learn's, to the bit."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from tabtrack.evaluate.importance import feature_importance

    frame = _mixed_frame(600)
    y = (frame["a"] + (frame["city"] == "x") > 0.5).astype(int)
    preprocess = ColumnTransformer([
        ("num", Pipeline([("scale", StandardScaler())]), ["a", "d"]),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder())]), ["city"]),
    ])  # fmt: skip
    pipeline = Pipeline([("preprocess", preprocess), ("model", RandomForestClassifier(20, n_jobs=-1, random_state=0))])
    X = frame[["a", "d", "city"]]
    pipeline.fit(X, y)
    table, method, rows = feature_importance(pipeline, X, y, random_state=0)
    native = pipeline.named_steps["model"].feature_importances_  # a, d, then city's three one-hot columns
    expected = {"a": native[0], "d": native[1], "city": native[2] + native[3] + native[4]}
    assert (method, rows) == ("native", None)
    assert dict(zip(table["feature"], table["importance"], strict=True)) == expected


def _mixed_frame(rows: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "a": rng.normal(size=rows), "b": rng.normal(size=rows),
        "city": rng.choice(["x", "y", "z"], rows), "d": rng.integers(0, 5, rows).astype(float),
    })  # fmt: skip
    frame.loc[::17, "b"] = np.nan
    return frame


class _OwnScore(HistGradientBoostingClassifier):
    def score(self, X, y, sample_weight=None):  # not the default accuracy: must be called as it is
        return float(np.mean(self.predict_proba(X)[:, 1]))


@pytest.mark.parametrize("kind", ["classifier", "regressor", "own_score"])
def test_batched_permutation_importance_equals_scikit_learns(kind, monkeypatch):
    from sklearn.inspection import permutation_importance

    from tabtrack.evaluate import importance
    from tabtrack.models.pipeline import build_pipeline

    X = _mixed_frame()
    if kind == "regressor":
        y, estimator = X["a"] * 2 + (X["city"] == "y") + X["d"] * 0.1, HistGradientBoostingRegressor(max_iter=20)
    else:
        y = ((X["a"] + (X["city"] == "x")) > 0.5).map({True: "yes", False: "no"})
        estimator = (_OwnScore if kind == "own_score" else HistGradientBoostingClassifier)(max_iter=20)
    pipeline = build_pipeline(estimator, numeric=["a", "b", "d"], categorical=["city"]).fit(X, y)
    expected = permutation_importance(pipeline, X, y, n_repeats=3, random_state=7).importances_mean
    assert np.abs(expected).max() > 0.001  # shuffling matters, so the comparison means something
    assert np.array_equal(
        importance.permutation_importance_means(pipeline, X, y, n_repeats=3, random_state=7), expected
    )
    # Split over several predict calls (a wide frame): still the same numbers.
    monkeypatch.setattr(importance, "PERMUTATION_MAX_CELLS", len(X) * X.shape[1] * 2)
    assert np.array_equal(
        importance.permutation_importance_means(pipeline, X, y, n_repeats=3, random_state=7), expected
    )


def test_threshold_metrics_match_an_independent_computation(workdir, data_dir, store_uri, client):
    result = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="logistic_regression", tracking_uri=store_uri,
        overrides=["thresholds=[0.25, 0.5, 0.9]"],
    )  # fmt: skip
    m = client.get_run(result.run_id).data.metrics
    frame = pd.read_csv(data_dir / "breast_cancer.csv")
    X, y = frame.drop(columns=["target"]), frame["target"]
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    proba = result.pipeline.predict_proba(X_test)[:, 1]
    for t in (0.25, 0.5, 0.9):
        assert m[f"test_f1_at_{t:g}"] == pytest.approx(skm.f1_score(y_test, proba >= t))
    assert "test_f1_at_0.3" not in m
    best = m["test_best_f1_threshold"]
    assert m["test_best_f1"] == pytest.approx(skm.f1_score(y_test, proba >= best))
    grid = np.unique(proba)
    assert m["test_best_f1"] >= max(skm.f1_score(y_test, proba >= t) for t in grid) - 1e-12


METRIC_FILE = '''
import numpy as np

def revenue_impact(y_true, y_pred, y_proba):
    """+10 per caught positive, -3 per false alarm."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(10 * np.sum((y_true == 1) & (y_pred == 1)) - 3 * np.sum((y_true == 0) & (y_pred == 1)))

def broken(y_true, y_pred, y_proba):
    raise ZeroDivisionError("no revenue data")

def not_a_number(y_true, y_pred, y_proba):
    return "high"
'''


def _revenue(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(10 * np.sum((y_true == 1) & (y_pred == 1)) - 3 * np.sum((y_true == 0) & (y_pred == 1)))


def test_custom_metric_from_file_and_module(workdir, data_dir, store_uri, client, monkeypatch):
    (workdir / "biz.py").write_text(METRIC_FILE)
    monkeypatch.syspath_prepend(str(workdir))
    for reference in ("biz.py:revenue_impact", "biz:revenue_impact"):
        result = tabtrack.train(
            data_dir / "breast_cancer.csv", target="target", model="logistic_regression", cv=3,
            tracking_uri=store_uri, overrides=[f"metrics=['{reference}']"],
        )  # fmt: skip
        m = client.get_run(result.run_id).data.metrics
        frame = pd.read_csv(data_dir / "breast_cancer.csv")
        X, y = frame.drop(columns=["target"]), frame["target"]
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
        assert m["test_revenue_impact"] == _revenue(y_test, result.pipeline.predict(X_test))
        assert m["train_revenue_impact"] == _revenue(y_train, result.pipeline.predict(X_train))
        assert "cv_revenue_impact_mean" in m


@pytest.mark.parametrize(
    ("function", "message"), [("broken", "ZeroDivisionError: no revenue data"), ("not_a_number", "returned 'high'")]
)
def test_failing_custom_metric_is_clear_and_marks_run_failed(
    function, message, workdir, data_dir, store_uri, client, cli
):
    (workdir / "biz.py").write_text(METRIC_FILE)
    with pytest.raises(TabtrackError, match=re.escape(f"custom metric 'biz.py:{function}'")):
        tabtrack.train(
            data_dir / "breast_cancer.csv", target="target", model="logistic_regression", experiment="api",
            tracking_uri=store_uri, overrides=[f"metrics=['biz.py:{function}']"],
        )  # fmt: skip
    runs = client.search_runs([client.get_experiment_by_name("api").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert function in runs[0].data.tags["error"] and message in runs[0].data.tags["error"]

    code, _, err = cli(
        "train", data_dir / "breast_cancer.csv", "--target", "target", "--model", "logistic_regression",
        "--set", f"metrics=['biz.py:{function}']", "--experiment", "cli",
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert [r.info.status for r in client.search_runs([client.get_experiment_by_name("cli").experiment_id])] == [
        "FAILED"
    ]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nowhere.py:fn", "not found"),
        ("biz.py:missing", "has no function 'missing'"),
        ("no_such_module_xyz:fn", "cannot be imported"),
        ("plain", "must look like"),
    ],
)
@pytest.mark.fresh_store
def test_bad_custom_metric_reference_is_a_config_error(reference, message, workdir, data_dir, cli):
    (workdir / "biz.py").write_text(METRIC_FILE)
    code, _, err = cli("train", data_dir / "diabetes.csv", "--target", "target", "--set", f"metrics=['{reference}']")
    assert code == 2 and message in err and not (workdir / "mlflow.db").exists()


def test_report_command_embeds_everything(workdir, data_dir, store_uri, cli):
    result = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="random_forest", cv=3, tracking_uri=store_uri
    )
    code, _out, err = cli("report", result.run_id, "-o", workdir / "r.html", "--tracking-uri", store_uri)
    assert code == 0, err
    page = (workdir / "r.html").read_text()
    assert result.run_id in page
    assert page.count("data:image/png;base64,") == len(CLASSIFICATION_PLOTS)
    assert not re.search(r"(src|href)=['\"]https?://", page), "the report must not need the network"
    assert f"{result.metrics['test']['roc_auc']:.4f}" in page
    cv = result.metrics["cv"]
    assert f"{cv['accuracy_mean']:.4f} ± {cv['accuracy_std']:.4f}" in page
    for lineage in ("data sha256", "Python", "OS"):
        assert lineage in page
    logged = mlflow.artifacts.load_text(f"runs:/{result.run_id}/report.html")
    assert logged.count("data:image/png;base64,") == len(CLASSIFICATION_PLOTS)


def test_unknown_run_for_report_is_a_user_error(workdir, store_uri, cli):
    code, _, err = cli("report", "0123456789abcdef", "--tracking-uri", store_uri)
    assert code == 2 and "run '0123456789abcdef' not found" in err


def test_plotting_leaves_no_figures_and_no_memory_growth(data_dir):
    import matplotlib.pyplot as plt

    from tabtrack.evaluate.evidence import draw_model_plots, draw_prediction_plots, model_evidence, prediction_plot_data

    result = tabtrack.train(data_dir / "wine.csv", target="target", model="logistic_regression", track=False)
    frame = pd.read_csv(data_dir / "wine.csv")
    X, y = frame.drop(columns=["target"]), frame["target"]
    y_pred, proba = result.pipeline.predict(X), result.pipeline.predict_proba(X)

    def once():
        evidence = model_evidence(result.pipeline, X, y, model_name="lr", random_state=0)
        predictions = prediction_plot_data(
            y, y_pred, proba, task="classification", classes=result.classes, model_name="lr"
        )
        assert len(draw_prediction_plots(predictions)) == 5 and len(draw_model_plots(evidence.model_plots)) == 1

    for _ in range(3):  # warm caches (fonts, text layout)
        once()
    gc.collect()  # figures are freed by the cycle collector; measure what survives it
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(10):  # tracemalloc makes each pass slow; 10 passes show any per-run leak
        once()
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert plt.get_fignums() == []
    assert growth < 1_000_000, f"{growth / 1e6:.1f} MB retained over 10 runs"
