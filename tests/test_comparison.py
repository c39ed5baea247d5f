"""Runs compared in pictures, slices and model cards: the comparison page (metrics side by side, overlaid
curves, what differs), slice metrics recomputed independently, the card of a registered version, and the
notebook view of a result."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pandas as pd
import pytest

import tabtrack
from conftest import runs_of
from tabtrack.evaluate.slices import metric_key, slice_gaps, slice_labels, slice_table
from tabtrack.pages.comparison_page import PREDICTIONS_FILE, RunView, overlaid_curves, render_comparison


def _view(name: str, seed: int, task: str = "classification", rows: int = 300) -> RunView:
    rng = np.random.default_rng(seed)
    if task == "classification":
        y = rng.integers(0, 2, rows)
        p = np.clip(y * 0.5 + rng.random(rows) * 0.6, 0, 1)
        table = pd.DataFrame({"y_true": y, "y_pred": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
        metrics = {
            "test_roc_auc": 0.9 + seed / 100,
            "cv_roc_auc_mean": 0.88,
            "cv_roc_auc_std": 0.01,
            "test_log_loss": 0.3,
        }
    else:
        y = rng.normal(10, 3, rows)
        table = pd.DataFrame({"y_true": y, "y_pred": y + rng.normal(0, 1 + seed, rows)})
        metrics = {"test_rmse": 1.0 + seed}
    return RunView(run_id=f"{seed:032d}", run_name=name, params={"task": task, "max_depth": str(seed)},
                   metrics=metrics, tags={"data.sha256": "abc"}, predictions=table)  # fmt: skip


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_overlaid_curves_draw_one_line_per_run(task):
    runs = [_view("a", 1, task), _view("b", 2, task), _view("c", 3, task)]
    figures = overlaid_curves(runs)
    if task == "classification":
        assert set(figures) == {"roc_curve", "pr_curve", "calibration_curve"}
        roc = figures["roc_curve"].axes[0]
        labelled = [line for line in roc.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label().split(":")[0] for line in labelled] == [run.label for run in runs]
    else:
        assert set(figures) == {"predicted_vs_actual", "residual_distribution"}
        scatter = figures["predicted_vs_actual"].axes[0]
        assert len(scatter.collections) == 3
        histogram = figures["residual_distribution"].axes[0]
        assert len([p for p in histogram.patches]) == 3  # one step outline per run


def test_the_page_marks_the_best_flags_different_test_data_and_missing_curves():
    a, b, c = _view("a", 1), _view("b", 2), _view("c", 3)
    b.test_digest, a.test_digest = "x1", "x2"
    c.predictions = None
    page = render_comparison([a, b, c], {"roc_curve": b"png"}, title="t")
    assert "different test data" in page and "No curves for c" in page
    assert "class='num best'>0.9300" in page  # roc_auc: greater is better, c's 0.93 is the best
    assert "(+0.0200)" in page  # c against the first run
    assert "max_depth" in page  # a parameter that differs
    # each run's full id, to copy; a link to it only where the runs live on a tracking server
    assert all(f"<code class='id'>{view.run_id}</code>" in page for view in (a, b, c)) and "MLflow UI" not in page
    c.ui_url = f"http://mlflow.internal:5000/#/experiments/3/runs/{c.run_id}"
    assert f"<a href='{c.ui_url}'>MLflow UI</a>" in render_comparison([a, c], {}, title="t")


def test_slices_are_quartiles_categories_with_other_and_recomputed_metrics():
    rng = np.random.default_rng(0)
    n = 400
    X = pd.DataFrame({"age": rng.integers(18, 90, n).astype(float), "sex": rng.choice(["f", "m"], n),
                      "city": rng.choice(["paris", "lyon", "tiny"], n, p=[0.6, 0.37, 0.03])})  # fmt: skip
    X.loc[:9, "age"] = np.nan
    y = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    table = slice_table(
        X, y, y_pred, None, columns=["age", "city"], task="classification", classes=[0, 1], metric="accuracy"
    )
    age = table[table["column"] == "age"]
    assert len(age) == 5 and age["slice"].iloc[-1] == "missing" and age["rows"].sum() == n
    city = table[table["column"] == "city"]
    assert set(city["slice"]) == {"paris", "lyon", "other"}  # "tiny" has fewer than 20 rows
    labels = slice_labels(X["city"])
    for _, row in city.iterrows():  # recomputed independently
        rows = (labels == row["slice"]).to_numpy()
        assert row["rows"] == rows.sum() and row["accuracy"] == pytest.approx(np.mean(y[rows] == y_pred[rows]))
        assert row["positive_rate"] == pytest.approx(np.mean(y_pred[rows] == 1))
    gaps = slice_gaps(table, "accuracy")
    assert gaps["test_accuracy_slice_gap_city"] == pytest.approx(city["accuracy"].max() - city["accuracy"].min())
    assert metric_key("age (years)?") == "age _years__"


def test_train_logs_slices_and_the_predictions_the_page_draws(workdir, data_dir, store_uri, client):
    result = tabtrack.train(data_dir / "mixed.csv", target="churn", tracking_uri=store_uri,
                            overrides=["slices=[city, age]"])  # fmt: skip
    run = client.get_run(result.run_id)
    slices = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{result.run_id}/reports/slices.csv")))
    assert set(slices["column"]) == {"city", "age"} and "roc_auc" in slices.columns
    assert {"test_roc_auc_slice_gap_city", "test_roc_auc_slice_gap_age"} <= set(run.data.metrics)
    predictions = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{PREDICTIONS_FILE}")))
    assert list(predictions.columns) == ["row", "y_true", "y_pred", "proba_no", "proba_yes"]
    assert len(predictions) == len(result.y_test)
    assert "Metrics by slice" in mlflow.artifacts.load_text(f"runs:/{result.run_id}/report.html")


def test_compare_carries_the_comparison_page(workdir, data_dir, store_uri, client, cli):
    code, _, err = cli("compare", data_dir / "breast_cancer.csv", "--target", "target", "--cv", "2",
                         "--models", "logistic_regression,random_forest", "--tracking-uri", store_uri)  # fmt: skip
    assert code == 0, err
    parent = next(r for r in runs_of(client, "breast_cancer") if r.info.run_name.startswith("compare_"))
    page = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/compare.html")
    assert "logistic_regression" in page and page.count("data:image/png;base64,") == 3
    children = [
        r.info.run_id
        for r in runs_of(client, "breast_cancer")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    code, _, err = cli("report", *children, "-o", workdir / "compare.html", "--tracking-uri", store_uri)
    assert code == 0, err
    assert (workdir / "compare.html").read_text().count("data:image/png;base64,") == 3
    code, _out, err = cli("report", "--experiment", "breast_cancer", "--top", "2", "-o", workdir / "top.html",
                         "--tracking-uri", store_uri)  # fmt: skip
    assert code == 0 and "2 runs" in (workdir / "top.html").read_text(), err


def test_a_registered_version_carries_its_card(workdir, data_dir, store_uri, client, cli):
    config = workdir / "card.yaml"
    config.write_text("card:\n  intended_use: Ranking churn risk for retention calls.\nslices: [plan]\n")
    code, _, err = cli("train", data_dir / "mixed.csv", "--target", "churn", "--config", config,
                         "--register", "churn", "--tracking-uri", store_uri)  # fmt: skip
    assert code == 0, err
    version = client.get_model_version("churn", "1")
    run = client.get_run(version.run_id)
    assert "Ranking churn risk" in version.description and run.info.run_id in version.description
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card/churn-v1.md")
    assert run.info.run_id in card and run.data.tags["data.sha256"] in card
    assert f"{run.data.metrics['test_roc_auc']:.4f}" in card and "Metrics by slice" in card
    assert "Not filled in" in card  # out-of-scope use was left empty
    code, _out, err = cli("card", "models:/churn/1", "-o", workdir / "card.html", "--tracking-uri", store_uri)
    assert code == 0 and "<h1>Model card: churn v1</h1>" in (workdir / "card.html").read_text(), err


def test_results_render_in_notebooks(workdir, data_dir, store_uri):
    result = tabtrack.train(data_dir / "wine.csv", target="target", tracking_uri=store_uri)
    page = result._repr_html_()
    assert "<table" in page and "f1_macro" in page and page.count("data:image/png;base64,") >= 2
    with tabtrack.start_run(experiment="nb", tracking_uri=store_uri) as run:
        run.log_metrics({"holdout_auc": 0.75})
    assert "<table" in run._repr_html_() and "holdout_auc" in run._repr_html_()


def test_runs_pair_on_the_test_rows_they_share_whatever_their_order():
    from tabtrack.pages.shared_rows import against_first

    a, b = _view("a", 1), _view("b", 2)
    t = a.predictions  # the same rows, worse answers
    b.predictions = t.assign(y_pred=1 - t["y_pred"], proba_0=t["proba_1"], proba_1=t["proba_0"])
    a.predictions.insert(0, "row", np.arange(300) + 1000)
    b.predictions.insert(0, "row", np.arange(300) + 1000)
    b.metrics = {**a.metrics, "test_accuracy": 0.1}
    a.metrics = {**a.metrics, "test_accuracy": 0.9}
    sampled = b.predictions.iloc[50:].sample(frac=1.0, random_state=0)  # 250 shared rows, shuffled
    _, whole = against_first([a, b])
    _, part = against_first([a, RunView(**{**b.__dict__, "predictions": sampled})])
    assert whole.rows == 300 and part.rows == 250
    assert part.differences["accuracy"].high < 0 and part.differences["roc_auc"].high < 0  # worse beyond noise
    first = a.predictions.set_index("row").loc[sampled["row"]]
    assert part.differences["accuracy"].old == pytest.approx(np.mean(first["y_pred"] == first["y_true"]))
    relabelled = sampled.assign(y_true=1 - sampled["y_true"])
    _, mismatch = against_first([a, RunView(**{**b.__dict__, "predictions": relabelled})])
    assert not mismatch.differences and "different targets" in mismatch.reason
    # digests differ: the same test rows (another drop_columns) still pair; other rows (another split) do not
    b.test_digest, a.test_digest = "x1", "x2"
    assert against_first([a, b])[1].rows == 300
    assert "different data" in against_first([a, RunView(**{**b.__dict__, "predictions": sampled})])[1].reason
