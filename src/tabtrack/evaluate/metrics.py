"""Metrics by task, as pure functions of labels, predictions and probabilities.

Names carry direction (scikit-learn's convention): `GREATER_IS_BETTER` is what tuning and the
champion gate read; nothing guesses it from the name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

GREATER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "precision_weighted": True,
    "recall_weighted": True,
    "f1_weighted": True,
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "mape": False,
}


def primary_metric(task: str, n_classes: int | None = None) -> str:
    """The metric that ranks models when the user names none."""
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "f1_macro"


def chosen_metric(metric: str | None, task: str, n_classes: int | None, *, option: str = "--metric") -> str:
    """`metric`, else the task's primary one, once its direction is known (a ConfigError lists the metrics whose
    direction is)."""
    from tabtrack.errors import ConfigError

    metric = metric or primary_metric(task, n_classes)
    if metric not in GREATER_IS_BETTER:
        raise ConfigError(f"unknown {option} {metric!r}; use one of {', '.join(sorted(GREATER_IS_BETTER))}.")
    return metric


def compute_metrics(
    task: str,
    y_true: Sequence,
    y_pred: Sequence,
    y_proba: np.ndarray | None = None,
    *,
    classes: Sequence | None = None,
) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    return classification_metrics(y_true, y_pred, y_proba, classes=classes)


def regression_metrics(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    from sklearn import metrics as m

    return {
        "rmse": float(m.root_mean_squared_error(y_true, y_pred)),
        "mae": float(m.mean_absolute_error(y_true, y_pred)),
        "r2": float(m.r2_score(y_true, y_pred)),
        "mape": float(m.mean_absolute_percentage_error(y_true, y_pred)),
    }


def classification_metrics(
    y_true: Sequence,
    y_pred: Sequence,
    y_proba: np.ndarray | None,
    *,
    classes: Sequence | None,
) -> dict[str, float]:
    """Binary metrics score the second class (sorted) as positive; multiclass ones are macro and
    weighted averages. Metrics undefined on this data (a class absent from `y_true`) are left out."""
    from sklearn import metrics as m

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    classes = list(classes) if classes is not None else sorted(np.unique(np.concatenate([y_true, y_pred])))
    result = {"accuracy": float(m.accuracy_score(y_true, y_pred))}
    if len(classes) == 2:
        positive = classes[1]
        for name, fn in (("precision", m.precision_score), ("recall", m.recall_score), ("f1", m.f1_score)):
            result[name] = float(fn(y_true, y_pred, pos_label=positive, zero_division=0))
    else:
        for average in ("macro", "weighted"):
            for name, fn in (("precision", m.precision_score), ("recall", m.recall_score), ("f1", m.f1_score)):
                result[f"{name}_{average}"] = float(
                    fn(y_true, y_pred, labels=classes, average=average, zero_division=0)
                )
    if y_proba is not None:
        result.update(_probability_metrics(y_true, np.asarray(y_proba), classes))
    return result


def _probability_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list) -> dict[str, float]:
    from sklearn import metrics as m
    from sklearn.preprocessing import label_binarize

    result = {"log_loss": float(m.log_loss(y_true, proba, labels=classes))}
    if not set(classes) <= set(y_true.tolist()):
        return result  # ROC and PR curves need every class present
    if len(classes) == 2:
        positive = y_true == classes[1]
        result["roc_auc"] = float(m.roc_auc_score(positive, proba[:, 1]))
        result["pr_auc"] = float(m.average_precision_score(positive, proba[:, 1]))
    else:
        result["roc_auc"] = float(m.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
        onehot = label_binarize(y_true, classes=classes)
        result["pr_auc"] = float(m.average_precision_score(onehot, proba, average="macro"))
    return result


def aggregate_folds(fold_metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """`{name}_mean` and `{name}_std` (population std) over the folds that define each metric."""
    names = sorted({name for fold in fold_metrics for name in fold})
    result: dict[str, float] = {}
    for name in names:
        values = [fold[name] for fold in fold_metrics if name in fold and not math.isnan(fold[name])]
        if values:
            result[f"{name}_mean"] = float(np.mean(values))
            result[f"{name}_std"] = float(np.std(values))
    return result


def prefixed(split: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """`{split}_{name}`, the naming contract for logged metrics."""
    return {f"{split}_{name}": value for name, value in metrics.items()}


def threshold_metrics(
    y_true: Sequence, proba_positive: np.ndarray, *, positive, thresholds: Sequence[float]
) -> dict[str, float]:
    """Binary only: F1 at each given threshold, and the threshold that maximises F1 (with that F1)."""
    from sklearn.metrics import f1_score, precision_recall_curve

    positives = np.asarray(y_true) == positive
    result = {f"f1_at_{t:g}": float(f1_score(positives, proba_positive >= t, zero_division=0)) for t in thresholds}
    precision, recall, cutoffs = precision_recall_curve(positives, proba_positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    if len(cutoffs):
        best = int(np.argmax(f1))
        result["best_f1_threshold"] = float(cutoffs[best])
        result["best_f1"] = float(f1[best])
    return result


def flatten(by_split: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """`{"test": {"f1": .9}, "cv": {"f1_mean": .8}}` -> `{"test_f1": .9, "cv_f1_mean": .8}`, as logged."""
    return {f"{split}_{name}": value for split, values in by_split.items() for name, value in values.items()}


def group_by_split(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """`{"test_f1": .9, "cv_f1_mean": .8}` -> `{"test": {"f1": .9}, "cv": {"f1_mean": .8}}`."""
    grouped: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        split, sep, name = key.partition("_")
        if sep and split in ("train", "cv", "test"):
            grouped.setdefault(split, {})[name] = value
    return grouped
