"""What a standard run computes about a fitted model, whichever door trained it: metrics by split, the evidence
beside them (reports, importance, plots, slices, SHAP values) and the test predictions the comparison page draws.
Pure: core/recorder.py records what this returns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.evaluate.evidence import (
    Evidence,
    draw_model_plots,
    draw_prediction_plots,
    model_evidence,
    prediction_evidence,
    prediction_plot_data,
)
from tabtrack.evaluate.metrics import compute_metrics, primary_metric
from tabtrack.evaluate.slices import SLICES_FILE, slice_gaps, slice_table

log = logging.getLogger(__name__)

# A custom metric: fn(y_true, y_pred, y_proba) -> float, with the name it is logged under.
NamedMetric = tuple[str, Callable[[Any, Any, Any], float]]
PREDICTIONS_FILE = "evaluation/test_predictions.csv"
PREDICTION_ROWS = 10_000  # the most test rows the file keeps (a seeded sample above that)


@dataclass
class Evaluation:
    """A fitted model's record: `metrics[split][name]` for train and test, and what goes beside them."""

    metrics: dict[str, dict[str, float]]
    evidence: Evidence = field(default_factory=Evidence)
    images: dict[str, bytes] = field(default_factory=dict)  # "plots/<name>.png" -> PNG
    predictions: pd.DataFrame | None = None  # the test split's (PREDICTIONS_FILE)
    y_pred: Any = None  # the test split's predictions and class probabilities, every row
    proba: Any = None


def prediction_table(y_true, y_pred, proba, classes, *, random_state: int = 0) -> pd.DataFrame:
    """What the comparison page draws a run's curves from: the test split's labels, predictions and class
    probabilities, at most PREDICTION_ROWS rows (a seeded sample). `row` is each row's label in the test split
    (its row in the file, for `train`), so the page can pair the rows two runs share."""
    rows = np.asarray(y_true.index) if isinstance(y_true, pd.Series) else np.arange(len(y_true))
    table = pd.DataFrame({"row": rows, "y_true": np.asarray(y_true), "y_pred": np.asarray(y_pred)})
    if proba is not None:
        for index, label in enumerate(classes):
            table[f"proba_{label}"] = np.asarray(proba)[:, index]
    if len(table) > PREDICTION_ROWS:
        table = table.sample(PREDICTION_ROWS, random_state=random_state).sort_index()
    return table


def predict_with_proba(model, X, task: str):
    """Labels and probabilities from one pass through the model: the label is the most probable class,
    which is what predict() returns for every family (half the time on big splits)."""
    if task != "classification" or not hasattr(model, "predict_proba"):
        return np.asarray(model.predict(X)), None
    proba = np.asarray(model.predict_proba(X))
    classes = np.asarray(model.classes_)
    return classes[np.argmax(proba, axis=1)], proba


def score_split(model, X, y, *, task: str, classes: Sequence | None, custom_metrics: Sequence[NamedMetric] = ()):
    """`(metrics, y_pred, proba)` on one split, custom metrics included."""
    y_pred, proba = predict_with_proba(model, X, task)
    scores = compute_metrics(task, y, y_pred, proba, classes=classes)
    for name, metric in custom_metrics:
        scores[name] = metric(np.asarray(y), y_pred, proba)
    return scores, y_pred, proba


def scoring_rows(X: pd.DataFrame, y: pd.Series, *, limit: int | None, random_state: int):
    """The rows train_* metrics are computed on: all of them, or on big splits a random sample (seeded) of
    `limit` rows. Predicting 800k training rows again costs more than a quarter of a 1M-row
    HistGradientBoosting run, and a 200k sample pins train accuracy to about 0.1%."""
    if limit is None or len(X) <= limit:
        return X, y
    positions = np.sort(np.random.default_rng(random_state).choice(len(X), limit, replace=False))
    return X.iloc[positions], y.iloc[positions]


def evaluate_fitted_model(
    model,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    *,
    task: str,
    classes: Sequence | None,
    model_name: str,
    thresholds: Sequence[float],
    random_state: int,
    train_rows: tuple[pd.DataFrame, pd.Series] | None = None,
    custom_metrics: Sequence[NamedMetric] = (),
    with_artifacts: bool = True,
    slices: Sequence[str] = (),
    explain: bool = False,
) -> Evaluation:
    """Test metrics (threshold metrics for binary classifiers), train metrics on `train_rows`, and, with
    artifacts, the classification report, feature importance, the standard plots, the test predictions the
    comparison page draws, metrics per slice of the `slices` columns, and with `explain` SHAP values (started
    first: where it can, the explainer runs in a child process beside the rest)."""
    explained = None
    if with_artifacts and explain:
        explained = explanation(model, X_test, task=task, model_name=model_name, random_state=random_state)
    test_scores, y_pred, proba = score_split(
        model, X_test, y_test, task=task, classes=classes, custom_metrics=custom_metrics
    )
    evidence = prediction_evidence(
        y_test, y_pred, proba, task=task, classes=classes, thresholds=thresholds, with_reports=with_artifacts
    )
    images: dict[str, bytes] = {}
    table = None
    if with_artifacts:
        evidence.add(model_evidence(model, X_test, y_test, model_name=model_name, random_state=random_state))
        predictions = prediction_plot_data(y_test, y_pred, proba, task=task, classes=classes, model_name=model_name)
        images = {**draw_model_plots(evidence.model_plots), **draw_prediction_plots(predictions)}
        table = prediction_table(y_test, y_pred, proba, classes, random_state=random_state)
        evidence.texts[PREDICTIONS_FILE] = table.to_csv(index=False)
        if slices:
            evidence.add(slice_evidence(X_test, y_test, y_pred, proba, columns=slices, task=task, classes=classes))
        if explained is not None:
            shap_evidence, shap_images = explained()
            evidence.add(shap_evidence)
            images.update(shap_images)
    metrics = {"test": {**test_scores, **evidence.metrics}}
    if train_rows is not None:
        metrics["train"], _, _ = score_split(
            model, *train_rows, task=task, classes=classes, custom_metrics=custom_metrics
        )
    return Evaluation(metrics=metrics, evidence=evidence, images=images, predictions=table, y_pred=y_pred, proba=proba)


def explanation(
    model, X, *, task: str, model_name: str, random_state: int
) -> Callable[[], tuple[Evidence, dict[str, bytes]]]:
    """Start explaining; the returned function gives SHAP values per input column as evidence:
    `reports/shap_importance.csv`, `plots/shap_summary.png` (beeswarm), `plots/shap_importance.png`, and the
    rows explained as the param `shap_rows`. An explanation is extra: its failure is a warning (and the param
    `shap_error`) on a run that still finishes."""
    from tabtrack.evaluate.explain import start_explanation
    from tabtrack.evaluate.plots import render_png, shap_importance_plot, shap_summary_plot

    def failed(exc: Exception) -> tuple[Evidence, dict[str, bytes]]:
        log.warning(
            "SHAP explanation skipped: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG)
        )
        return Evidence(params={"shap_error": f"{type(exc).__name__}: {exc}"[:500]}), {}

    try:
        pending = start_explanation(model, X, task=task, random_state=random_state)
    except Exception as exc:
        error = exc  # `exc` is unbound after the except block
        return lambda: failed(error)

    def finish() -> tuple[Evidence, dict[str, bytes]]:
        try:
            result = pending()
        except Exception as exc:
            return failed(exc)
        importance = result.importance()
        summary = shap_summary_plot(result.values, result.data, model=model_name, output=result.output)
        bars = shap_importance_plot(importance, model=model_name, output=result.output)
        evidence = Evidence(
            params={"shap_rows": result.rows, "shap_explainer": result.explainer, "shap_output": result.output},
            texts={"reports/shap_importance.csv": importance.to_csv(index=False)},
        )
        return evidence, {"plots/shap_summary.png": render_png(summary), "plots/shap_importance.png": render_png(bars)}

    return finish


def slice_evidence(X, y, y_pred, proba, *, columns: Sequence[str], task: str, classes) -> Evidence:
    """`reports/slices.csv` (test metrics per slice of each column) and the largest gap per column as
    `test_{metric}_slice_gap_{column}`, for the task's primary metric."""
    metric = primary_metric(task, len(classes) if classes is not None else None)
    table = slice_table(X, y, y_pred, proba, columns=columns, task=task, classes=classes, metric=metric)
    return Evidence(run_metrics=slice_gaps(table, metric), texts={SLICES_FILE: table.to_csv(index=False)})
