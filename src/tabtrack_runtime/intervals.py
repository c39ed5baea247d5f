"""Conformal prediction intervals and sets from a calibration a training run recorded: a regression's answer
within `prediction ± quantile`, a classifier's set of every class whose probability is at least `1 - quantile`
(and its most probable class, so no set is empty). On new rows like the calibration rows, the interval or set
holds the true value for at least `level` of them (split conformal prediction).

The calibration is a plain dict (the logged model's MLflow metadata `tabtrack_intervals`):
`{"level", "task", "method", "quantile", "rows"}`. numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METADATA_KEY = "tabtrack_intervals"


def bounds(calibration: Mapping[str, Any], predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """A regression's `(lower, upper)` for each prediction."""
    values = np.asarray(predictions, dtype=float)
    quantile = float(calibration["quantile"])
    return values - quantile, values + quantile


def prediction_sets(calibration: Mapping[str, Any], proba: Any, classes: Sequence) -> list[list]:
    """A classifier's set of plausible labels for each row, most probable first."""
    proba = np.asarray(proba, dtype=float)
    inside = proba >= 1.0 - float(calibration["quantile"])
    inside[np.arange(len(proba)), proba.argmax(axis=1)] = True
    order = np.argsort(-proba, axis=1, kind="stable")
    labels = [c.item() if hasattr(c, "item") else c for c in classes]
    return [[labels[k] for k in row if keep[k]] for row, keep in zip(order, inside, strict=True)]


def with_intervals(model: Any, calibration: Mapping[str, Any], rows: Any):
    """`prediction` and its interval (`lower`, `upper`) or set (`prediction_set`) for each row: what
    `model_intervals` answers (interval_pyfunc.py)."""
    import pandas as pd

    if calibration["task"] == "regression":
        predictions = model.predict(rows)
        lower, upper = bounds(calibration, predictions)
        return pd.DataFrame({"prediction": predictions, "lower": lower, "upper": upper})
    proba = model.predict_proba(rows)
    classes = list(model.classes_)
    predictions = [classes[k] for k in np.asarray(proba).argmax(axis=1)]
    return pd.DataFrame({"prediction": predictions, "prediction_set": prediction_sets(calibration, proba, classes)})
