"""What a run's numbers say about themselves, in words: a test score too good to be true (and the columns carrying
it), overfitting, the largest gap between slices, imbalanced classes. Pure: metrics and tables in, sentences out.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from tabtrack.evaluate.metrics import GREATER_IS_BETTER

TOO_GOOD_TAG = "tabtrack.too_good_to_be_true"  # the run's tag holding the warning
TOO_GOOD = {"r2": 0.999, "roc_auc": 0.999}  # at or above: a score real tabular data rarely allows
TOO_GOOD_ROWS = 50  # fewer test rows than this can be perfect by luck
OVERFIT_GAP = 0.05  # train above cross-validation by more than this (and 3 CV standard deviations)
MINORITY_SHARE = 0.1  # a class below this share of the test rows


def too_good(test: Mapping[str, float], rows: int, importance: pd.DataFrame | None) -> str | None:
    """A warning when a test score is at the edge on enough rows, naming the input columns the model leans on."""
    edge = [f"{name} {test[name]:.4f}" for name, bound in TOO_GOOD.items() if test.get(name, 0.0) >= bound]
    if test.get("accuracy") == 1.0:
        edge.append("accuracy 1.0")
    if not edge or rows < TOO_GOOD_ROWS:
        return None
    carried = carrying_columns(importance)
    return (
        f"test {', '.join(edge)} on {rows:,} rows is too good to be true: check that no input column is computed "
        f"from the target or known only after it (a leak)"
        + (f"; the model leans on {carried}" if carried else "")
        + "."
    )


def carrying_columns(importance: pd.DataFrame | None, most: int = 3) -> str:
    """The top input columns by importance, with their share of the total: `amount (62%), term (20%)`."""
    if importance is None or importance.empty:
        return ""
    positive = importance[importance["importance"] > 0]
    total = float(positive["importance"].sum())
    if total <= 0:
        return ""
    top = [row for row in positive.head(most).itertuples() if row.importance / total >= 0.01]
    return ", ".join(f"{row.feature} ({row.importance / total:.0%})" for row in top)


def run_caveats(metrics: Mapping[str, float], class_counts: Mapping[str, int] | None = None) -> list[str]:
    """Caveats a model card can see in the run's own metrics (flat names, as logged) and its test classes."""
    caveats = []
    metric = next((m for m in ("roc_auc", "f1_macro", "accuracy", "r2", "rmse") if f"train_{m}" in metrics), None)
    if metric is not None:
        train = metrics[f"train_{metric}"]
        versus, spread, label = (
            metrics.get(f"cv_{metric}_mean"),
            metrics.get(f"cv_{metric}_std", 0.0),
            "cross-validation",
        )
        if versus is None:
            versus, spread, label = metrics.get(f"test_{metric}"), 0.0, "the test split"
        if versus is not None:
            gap = (train - versus) if GREATER_IS_BETTER[metric] else (versus - train)
            if gap > max(OVERFIT_GAP * (1 if metric != "rmse" else abs(versus)), 3 * spread):
                caveats.append(
                    f"Overfitting: train {metric} {train:.4f} against {versus:.4f} on {label}; the model fits its "
                    "training rows much better than unseen ones."
                )
    gaps = {name: value for name, value in metrics.items() if "_slice_gap_" in name and name.startswith("test_")}
    if gaps:
        name, value = max(gaps.items(), key=lambda item: item[1])
        measured, column = name.removeprefix("test_").split("_slice_gap_", 1)
        caveats.append(
            f"The largest slice gap: {measured} differs by {value:.4f} between the slices of {column!r} (test split)."
        )
    if class_counts:
        total = sum(class_counts.values())
        rare = {
            label: count / total for label, count in class_counts.items() if total and count / total < MINORITY_SHARE
        }
        if rare:
            named = ", ".join(f"{label!r} {share:.1%}" for label, share in rare.items())
            caveats.append(
                f"Imbalanced classes: {named} of the test rows; accuracy flatters such a model, read recall and "
                "ROC/PR AUC for the rare class."
            )
    return caveats
