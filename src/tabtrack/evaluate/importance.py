"""Feature importance per *input* column: native importances summed over a column's one-hot
outputs, or permutation importance of the whole pipeline on (a sample of) the test split."""

from __future__ import annotations

import numpy as np
import pandas as pd

PERMUTATION_MAX_ROWS = 1000
PERMUTATION_REPEATS = 2


def feature_importance(
    pipeline, X_test: pd.DataFrame, y_test: pd.Series, *, random_state: int
) -> tuple[pd.DataFrame, str, int | None]:
    """`(table, method, sample_rows)`: a frame of `feature, importance` sorted descending, the method
    ("native" or "permutation") and, for permutation, how many test rows were used."""
    estimator = pipeline.named_steps["model"]
    native = _native(estimator)
    if native is not None:
        per_column = _to_input_columns(pipeline.named_steps["preprocess"], native, list(X_test.columns))
        return _table(per_column), "native", None
    from sklearn.inspection import permutation_importance

    sample = X_test
    y_sample = y_test
    if len(X_test) > PERMUTATION_MAX_ROWS:
        sample = X_test.sample(PERMUTATION_MAX_ROWS, random_state=random_state)
        y_sample = y_test.loc[sample.index]
    result = permutation_importance(
        pipeline, sample, y_sample, n_repeats=PERMUTATION_REPEATS, random_state=random_state
    )
    return _table(dict(zip(X_test.columns, result.importances_mean, strict=True))), "permutation", len(sample)


def _native(estimator) -> np.ndarray | None:
    if hasattr(estimator, "feature_importances_"):
        return np.asarray(estimator.feature_importances_, dtype=float)
    if hasattr(estimator, "coef_"):
        coef = np.abs(np.asarray(estimator.coef_, dtype=float))
        return coef.mean(axis=0) if coef.ndim == 2 else coef
    return None


def _to_input_columns(preprocess, values: np.ndarray, columns: list[str]) -> dict[str, float]:
    """Sum transformed-feature importances back onto the raw column each came from."""
    totals = dict.fromkeys(columns, 0.0)
    position = 0
    for name, transformer, selected in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        selected = list(selected)
        if name == "cat":
            encoder = transformer.named_steps["onehot"]
            placeholders = [f"c{i}" for i in range(len(selected))]
            owners = [int(out.split("_", 1)[0][1:]) for out in encoder.get_feature_names_out(placeholders)]
            for owner in owners:
                totals[selected[owner]] += float(values[position])
                position += 1
        else:
            for column in selected:
                totals[column] += float(values[position])
                position += 1
    return totals


def _table(per_column: dict[str, float]) -> pd.DataFrame:
    table = pd.DataFrame({"feature": list(per_column), "importance": list(per_column.values())})
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
