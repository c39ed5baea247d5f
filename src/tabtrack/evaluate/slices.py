"""Test metrics per slice of the data: where a model is weak. Pure functions of the test rows and predictions.

A slice is a value of an input column: numeric columns are cut into quartiles, categories with fewer than
MIN_SLICE_ROWS test rows are pooled as `other`, missing values are their own slice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tabtrack.evaluate.metrics import compute_metrics

SLICES_FILE = "reports/slices.csv"
MIN_SLICE_ROWS = 20
OTHER, MISSING = "other", "missing"


def slice_labels(values: pd.Series) -> pd.Series:
    """Each row's slice of its column: a quartile's interval for numbers, the category (or `other`) for text."""
    present = values.notna()
    labels = pd.Series(MISSING, index=values.index, dtype=object)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > 4:
        numbers = values[present].astype(float)
        codes, edges = pd.qcut(numbers, 4, labels=False, retbins=True, duplicates="drop")
        names = [f"{'[' if i == 0 else '('}{edges[i]:.4g}, {edges[i + 1]:.4g}]" for i in range(len(edges) - 1)]
        labels[present] = [names[int(code)] for code in codes]
        return labels
    text = values[present].astype(str)
    counts = text.value_counts()
    labels[present] = text.where(text.map(counts) >= MIN_SLICE_ROWS, OTHER)
    return labels


def slice_table(
    X: pd.DataFrame,
    y_true: Sequence,
    y_pred: Sequence,
    proba: np.ndarray | None,
    *,
    columns: Sequence[str],
    task: str,
    classes: Sequence | None,
    metric: str,
) -> pd.DataFrame:
    """One row per (column, slice): rows, the metric, and the positive rate (binary classification: the share
    predicted as the second class), else the mean prediction (regression)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    records = []
    for column in columns:
        labels = slice_labels(X[column]).to_numpy()
        for label in sorted(set(labels), key=_slice_order):
            rows = labels == label
            scores = compute_metrics(
                task, y_true[rows], y_pred[rows], None if proba is None else proba[rows], classes=classes
            )
            record = {"column": column, "slice": label, "rows": int(rows.sum()), metric: scores.get(metric, math.nan)}
            if task == "regression":
                record["mean_prediction"] = float(np.mean(y_pred[rows].astype(float)))
            elif classes is not None and len(classes) == 2:
                record["positive_rate"] = float(np.mean(y_pred[rows] == classes[1]))
            records.append(record)
    return pd.DataFrame.from_records(records)


def slice_gaps(table: pd.DataFrame, metric: str) -> dict[str, float]:
    """The largest gap of `metric` between the slices of each column, as `test_{metric}_slice_gap_{column}`."""
    gaps = {}
    for column, rows in table.groupby("column", sort=False):
        values = rows[metric].dropna()
        if len(values) >= 2:
            gaps[f"test_{metric}_slice_gap_{metric_key(column)}"] = float(values.max() - values.min())
    return gaps


def metric_key(name: str) -> str:
    """A column name as MLflow allows in a metric key: letters, digits, `_ - . /` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(name)).strip() or "column"


def _slice_order(label: str):
    """Quartiles in order of their lower bound, then categories, `other` and `missing` last."""
    match = re.match(r"^[\(\[](-?[\d.e+-]+),", label)
    if match:
        return (0, float(match.group(1)), "")
    return (2 if label in (OTHER, MISSING) else 1, 0.0, label)
