"""A profile of the rows a model was trained on and of its predictions on the test split: what `tabtrack monitor`
compares later rows with. It keeps no raw rows unless asked for (training data is often personal data): per input
column its kind, null share and, for numbers, quantiles (the bins drift is measured on) or, for text, category
frequencies (the most frequent, then "other") and the categories seen; the predictions' distribution likewise.

Logged with every run as `monitoring/reference.json`; `tabtrack monitor --reference FILE` builds one from a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.data.prepare import is_numeric_feature

REFERENCE_FILE = "monitoring/reference.json"
VERSION = 1
QUANTILES = 100  # numbers: the reference's percentiles; every tenth makes the 10 bins PSI is computed on
TOP_CATEGORIES = 50  # text: the most frequent categories kept with their counts, the rest pooled as OTHER
KNOWN_CATEGORIES = 1000  # text: up to this many distinct values are kept by name, to tell new ones apart
OTHER = "__other__"


def reference_profile(
    X: pd.DataFrame,
    *,
    task: str,
    predictions: Any,
    proba: np.ndarray | None = None,
    classes: Sequence | None = None,
    sample_rows: int = 0,
    random_state: int = 0,
) -> dict[str, Any]:
    """The profile of input rows `X` and of a model's `predictions` (and class probabilities) on its test split.
    `sample_rows`: also keep a seeded sample of that many raw input rows (off by default)."""
    profile: dict[str, Any] = {
        "version": VERSION,
        "rows": len(X),
        "columns": {str(c): column_profile(X[c]) for c in X.columns},
        "predictions": prediction_profile(predictions, proba, task=task, classes=classes),
    }
    if sample_rows:
        sample = X.sample(min(sample_rows, len(X)), random_state=random_state)
        profile["sample"] = json.loads(sample.to_json(orient="split", index=False))
    return profile


def column_profile(values: pd.Series) -> dict[str, Any]:
    """One column: numbers by their quantiles, anything else by its categories."""
    present = values.dropna()
    entry: dict[str, Any] = {"null_share": float(values.isna().mean()) if len(values) else 0.0}
    if is_numeric_feature(values):
        numbers = present.astype("float64").to_numpy()
        entry["kind"] = "numeric"
        if len(numbers):
            # values that occur (no interpolation), so a discrete column's bins are its values
            entry["quantiles"] = np.quantile(numbers, np.linspace(0, 1, QUANTILES + 1), method="inverted_cdf").tolist()
            entry.update(mean=float(numbers.mean()), std=float(numbers.std()))
        return entry
    counts = present.astype(str).value_counts()
    entry["kind"] = "categorical"
    entry["categories"] = {str(k): int(v) for k, v in counts.iloc[:TOP_CATEGORIES].items()}
    if len(counts) > TOP_CATEGORIES:
        entry["categories"][OTHER] = int(counts.iloc[TOP_CATEGORIES:].sum())
    entry["known"] = [str(k) for k in counts.index[:KNOWN_CATEGORIES]]
    entry["known_complete"] = len(counts) <= KNOWN_CATEGORIES
    return entry


def prediction_profile(predictions: Any, proba: np.ndarray | None, *, task: str, classes: Sequence | None):
    """Regression: the predictions' quantiles; classification: each label's count and each class probability's
    quantiles."""
    predictions = pd.Series(np.asarray(predictions))
    if task == "regression":
        return {"task": task, "rows": len(predictions), "prediction": column_profile(predictions.astype("float64"))}
    profile: dict[str, Any] = {
        "task": task,
        "rows": len(predictions),
        "prediction": column_profile(predictions.astype(str)),
    }
    if proba is not None and classes is not None:
        profile["proba"] = {
            str(label): column_profile(pd.Series(np.asarray(proba)[:, index])) for index, label in enumerate(classes)
        }
    return profile
