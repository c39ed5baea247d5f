"""Everything a reviewer looks at besides the headline metrics, computed from test predictions:
plots, classification report, feature importance and threshold metrics. Pure: returns bytes and
text keyed by artifact path; the workflow decides where they are logged."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.evaluate.importance import feature_importance
from tabtrack.evaluate.metrics import threshold_metrics
from tabtrack.evaluate.plots import (
    classification_plots,
    feature_importance_plot,
    loss_curve_plot,
    regression_plots,
    render_png,
)
from tabtrack.evaluate.reports import classification_report


@dataclass
class Evidence:
    metrics: dict[str, float] = field(default_factory=dict)  # extra test metrics, without the split prefix
    run_metrics: dict[str, float] = field(default_factory=dict)  # logged as named, e.g. best_epoch
    images: dict[str, bytes] = field(default_factory=dict)  # "plots/name.png" -> PNG
    texts: dict[str, str] = field(default_factory=dict)  # "reports/name.ext" -> text
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def build_evidence(
    pipeline,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    *,
    task: str,
    classes: Sequence | None,
    model_name: str,
    thresholds: Sequence[float],
    random_state: int,
    with_plots: bool = True,
) -> Evidence:
    """`with_plots=False` computes only what is printed (threshold metrics), for runs that store nothing."""
    start = time.perf_counter()
    evidence = Evidence()
    if not with_plots:
        if task == "classification" and proba is not None and len(classes) == 2:
            evidence.metrics.update(threshold_metrics(y_test, proba[:, 1], positive=classes[1], thresholds=thresholds))
        evidence.seconds = time.perf_counter() - start
        return evidence
    if task == "classification":
        figures = classification_plots(y_test, y_pred, proba, classes=classes, model=model_name)
        text, as_json = classification_report(y_test, y_pred, classes=classes)
        evidence.texts["reports/classification_report.txt"] = text
        evidence.texts["reports/classification_report.json"] = as_json
        if proba is not None and len(classes) == 2:
            evidence.metrics.update(threshold_metrics(y_test, proba[:, 1], positive=classes[1], thresholds=thresholds))
    else:
        figures = regression_plots(y_test, y_pred, model=model_name)

    table, method, rows = feature_importance(pipeline, X_test, y_test, random_state=random_state)
    figures["feature_importance"] = feature_importance_plot(table, model=model_name, method=method)
    evidence.texts["reports/feature_importance.csv"] = table.to_csv(index=False)
    evidence.params["feature_importance_method"] = method
    if rows is not None:
        evidence.params["permutation_importance_rows"] = rows

    estimator = pipeline.named_steps["model"]
    history = getattr(estimator, "history_", None)
    if history:
        figures["loss_curve"] = loss_curve_plot(history, best_epoch=estimator.best_epoch_, model=model_name)
        evidence.run_metrics.update({"best_epoch": estimator.best_epoch_, "n_epochs": estimator.n_epochs_})

    evidence.images = {f"plots/{name}.png": render_png(fig) for name, fig in figures.items()}
    evidence.seconds = time.perf_counter() - start
    return evidence
