"""Everything a reviewer looks at besides the headline metrics, computed from test predictions:
plots, classification report, feature importance and threshold metrics. Pure: returns bytes and
text keyed by artifact path; the workflow decides where they are logged.

Plots are drawn from plain inputs: `PredictionPlotData`, the test predictions, by `draw_prediction_plots`,
and `ModelPlotData`, which `model_evidence` returns with the importance texts, by `draw_model_plots`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.evaluate.importance import feature_importance, final_estimator
from tabtrack.evaluate.metrics import threshold_metrics
from tabtrack.evaluate.plots import (
    classification_plots,
    feature_importance_plot,
    loss_curve_plot,
    regression_plots,
    render_png,
)


@dataclass
class PredictionPlotData:
    """What the task's plots are drawn from: the test split's predictions."""

    task: str
    model_name: str
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: list | None


@dataclass
class ModelPlotData:
    """What the model's own plots are drawn from: the importance table and the per-epoch losses."""

    model_name: str
    importance: pd.DataFrame
    importance_method: str
    history: list[dict[str, float]] | None = None  # per-epoch losses, for models that keep them
    best_epoch: int = 0


@dataclass
class Evidence:
    metrics: dict[str, float] = field(default_factory=dict)  # extra test metrics, without the split prefix
    run_metrics: dict[str, float] = field(default_factory=dict)  # logged as named, e.g. best_epoch
    model_plots: ModelPlotData | None = None  # None: nothing to draw (runs that store nothing)
    texts: dict[str, str] = field(default_factory=dict)  # "reports/name.ext" -> text
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Evidence) -> Evidence:
        for name in ("metrics", "run_metrics", "texts", "params"):
            getattr(self, name).update(getattr(other, name))
        self.model_plots = other.model_plots or self.model_plots
        return self


def model_evidence(pipeline, X_test: pd.DataFrame, y_test: pd.Series, *, model_name: str, random_state: int):
    """What needs the fitted pipeline but not its test predictions: the importance table (as CSV and as
    plot data) and the per-epoch losses of models that keep them."""
    evidence = Evidence()
    table, method, rows = feature_importance(pipeline, X_test, y_test, random_state=random_state)
    evidence.texts["reports/feature_importance.csv"] = table.to_csv(index=False)
    evidence.params["feature_importance_method"] = method
    if rows is not None:
        evidence.params["permutation_importance_rows"] = rows

    estimator = final_estimator(pipeline)
    history = getattr(estimator, "history_", None)
    if history:
        evidence.run_metrics.update({"best_epoch": estimator.best_epoch_, "n_epochs": estimator.n_epochs_})

    evidence.model_plots = ModelPlotData(
        model_name=model_name, importance=table, importance_method=method,
        history=list(history) if history else None, best_epoch=estimator.best_epoch_ if history else 0,
    )  # fmt: skip
    return evidence


def prediction_evidence(
    y_test: pd.Series,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    *,
    task: str,
    classes: Sequence | None,
    thresholds: Sequence[float],
    with_reports: bool = True,
) -> Evidence:
    """What the test predictions give: threshold metrics (binary classification) and, `with_reports`,
    the classification report."""
    evidence = Evidence()
    if task != "classification":
        return evidence
    if with_reports:
        text, as_json = classification_report(y_test, y_pred, classes=classes)
        evidence.texts["reports/classification_report.txt"] = text
        evidence.texts["reports/classification_report.json"] = as_json
    if proba is not None and len(classes) == 2:
        evidence.metrics.update(threshold_metrics(y_test, proba[:, 1], positive=classes[1], thresholds=thresholds))
    return evidence


def prediction_plot_data(y_true, y_pred, proba, *, task: str, classes: Sequence | None, model_name: str):
    return PredictionPlotData(
        task=task, model_name=model_name, y_true=np.asarray(y_true), y_pred=np.asarray(y_pred), proba=proba,
        classes=list(classes) if classes is not None else None,
    )  # fmt: skip


def draw_prediction_plots(data: PredictionPlotData) -> dict[str, bytes]:
    """`{"plots/<name>.png": PNG}` for the task's plots of the test predictions."""
    if data.task == "classification":
        figures = classification_plots(
            data.y_true, data.y_pred, data.proba, classes=data.classes, model=data.model_name
        )
    else:
        figures = regression_plots(data.y_true, data.y_pred, model=data.model_name)
    return _rendered(figures)


def draw_model_plots(data: ModelPlotData) -> dict[str, bytes]:
    """`{"plots/<name>.png": PNG}` for feature importance and, for models that keep them, the losses."""
    figures = {
        "feature_importance": feature_importance_plot(
            data.importance, model=data.model_name, method=data.importance_method
        )
    }
    if data.history:
        figures["loss_curve"] = loss_curve_plot(data.history, best_epoch=data.best_epoch, model=data.model_name)
    return _rendered(figures)


def _rendered(figures: dict[str, object]) -> dict[str, bytes]:
    return {f"plots/{name}.png": render_png(fig) for name, fig in figures.items()}


def classification_report(y_true: Sequence, y_pred: Sequence, *, classes: Sequence) -> tuple[str, str]:
    """scikit-learn's classification report as (text, json)."""
    from sklearn.metrics import classification_report as sk_report

    labels = list(classes)
    names = [str(c) for c in labels]
    text = sk_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0, digits=4)
    as_dict = sk_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0, output_dict=True)
    return text, json.dumps(as_dict, indent=2)
