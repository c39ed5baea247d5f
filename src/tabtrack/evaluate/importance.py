"""Feature importance per *input* column: native importances summed over a column's one-hot
outputs, or permutation importance of the whole pipeline on (a sample of) the test split."""

from __future__ import annotations

import numpy as np
import pandas as pd

PERMUTATION_MAX_ROWS = 1000
PERMUTATION_REPEATS = 2
PERMUTATION_MAX_CELLS = 4_000_000  # cells per predict call when scoring shuffled copies


def feature_importance(
    pipeline, X_test: pd.DataFrame, y_test: pd.Series, *, random_state: int
) -> tuple[pd.DataFrame, str, int | None]:
    """`(table, method, sample_rows)`: a frame of `feature, importance` sorted descending, the method
    ("native" or "permutation") and, for permutation, how many test rows were used."""
    native = _native(final_estimator(pipeline))
    per_column = _native_per_column(pipeline, native, list(X_test.columns)) if native is not None else None
    if per_column is not None:
        return _table(per_column), "native", None
    sample = X_test
    y_sample = y_test
    if len(X_test) > PERMUTATION_MAX_ROWS:
        sample = X_test.sample(PERMUTATION_MAX_ROWS, random_state=random_state)
        y_sample = y_test.loc[sample.index]
    means = permutation_importance_means(
        pipeline, sample, y_sample, n_repeats=PERMUTATION_REPEATS, random_state=random_state
    )
    return _table(dict(zip(X_test.columns, means, strict=True))), "permutation", len(sample)


def permutation_importance_means(pipeline, X: pd.DataFrame, y: pd.Series, *, n_repeats: int, random_state: int):
    """scikit-learn's `permutation_importance(...).importances_mean` (same shuffles, same default score),
    with every shuffled copy of X scored in one predict call instead of one call per column and repeat:
    on HistGradientBoosting the 60 small calls cost ~1 s, nearly all of it per-call overhead."""
    metric = _default_metric(final_estimator(pipeline))
    if metric is None:  # an estimator with its own score(): let scikit-learn call it
        from sklearn.inspection import permutation_importance

        return permutation_importance(pipeline, X, y, n_repeats=n_repeats, random_state=random_state).importances_mean
    n_rows, n_columns = X.shape
    # As scikit-learn does: one seed drawn from random_state, the same shuffles replayed for every column,
    # each repeat shuffling the previous repeat's order again.
    rng = np.random.RandomState(np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1))
    orders, order, shuffled = [], np.arange(n_rows), np.arange(n_rows)
    for _ in range(n_repeats):
        rng.shuffle(shuffled)
        order = order[shuffled]
        orders.append(order)
    # Copies scored per predict call, so a wide frame does not become one huge batch.
    per_call = max(1, PERMUTATION_MAX_CELLS // (n_rows * n_columns))
    blocks = [(None, None)] + [(column, order) for column in range(n_columns) for order in orders]
    y_true = np.asarray(y)
    scores = []
    for start in range(0, len(blocks), per_call):
        chunk = blocks[start : start + per_call]
        predictions = np.asarray(pipeline.predict(_stacked(X, chunk))).reshape(len(chunk), n_rows)
        scores.extend(metric(y_true, block) for block in predictions)
    baseline = scores[0]
    permuted = np.array(scores[1:]).reshape(n_columns, n_repeats)
    return np.mean(baseline - permuted, axis=1)


def _default_metric(estimator):
    """What `estimator.score` computes, when it is scikit-learn's default for its kind (or it has no score());
    else None."""
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.metrics import accuracy_score, r2_score

    score = getattr(type(estimator), "score", None)
    if score is None:  # a model with no score() of its own (an adapter): the default for its kind
        return accuracy_score if hasattr(estimator, "classes_") else r2_score
    if score is ClassifierMixin.score:
        return accuracy_score
    if score is RegressorMixin.score:
        return r2_score
    return None


def _stacked(X: pd.DataFrame, blocks: list[tuple[int | None, np.ndarray | None]]) -> pd.DataFrame:
    """Copies of X one after another; in block `(column, order)` that column's rows are taken in `order`."""
    identity = np.arange(len(X))
    columns = {}
    for position, name in enumerate(X.columns):
        rows = np.concatenate([order if column == position else identity for column, order in blocks])
        columns[name] = X.iloc[:, position].take(rows).reset_index(drop=True)  # keeps the column's dtype
    return pd.DataFrame(columns)


def final_estimator(model):
    """The estimator at the end of a Pipeline, or the model itself."""
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def _native_per_column(model, native: np.ndarray, columns: list[str]) -> dict[str, float] | None:
    """Native importances per input column, where it is known which column each feature came from: tabtrack's
    preprocessing (one-hot outputs summed back), or an estimator fed the input columns as they are. None for
    any other preprocessing (a user's Pipeline): its importance is then permutation importance."""
    steps = getattr(model, "steps", None)
    if not steps:
        return dict(zip(columns, map(float, native), strict=True)) if len(native) == len(columns) else None
    return _to_input_columns(dict(steps).get("preprocess"), native, columns)


def _native(estimator) -> np.ndarray | None:
    from joblib import parallel_config

    # Read once (it is computed on every access), and in this thread: a forest averages its trees through a
    # joblib thread pool (n_jobs=-1), ~35 ms of pool start-up and polling for ~8 ms of work, same numbers.
    with parallel_config(backend="sequential"):
        values = getattr(estimator, "feature_importances_", None)
    if values is not None:
        return np.asarray(values, dtype=float)
    if hasattr(estimator, "coef_"):
        coef = np.abs(np.asarray(estimator.coef_, dtype=float))
        return coef.mean(axis=0) if coef.ndim == 2 else coef
    return None


def _to_input_columns(preprocess, values: np.ndarray, columns: list[str]) -> dict[str, float] | None:
    """Sum transformed-feature importances back onto the raw column each came from; None where the widths
    do not add up."""
    owners = feature_owners(preprocess, columns)
    if owners is None or len(owners) != len(values):
        return None
    totals = dict.fromkeys(columns, 0.0)
    for owner, value in zip(owners, values, strict=True):
        totals[owner] += float(value)
    return totals


def feature_owners(preprocess, columns: list[str]) -> list[str] | None:
    """The input column each transformed feature of tabtrack's preprocessing came from (numeric columns one
    feature each, categorical ones their one-hot features); None for any other preprocessing."""
    names = [name for name, _, _ in getattr(preprocess, "transformers_", [])]
    if not names or not set(names) <= {"num", "cat", "remainder"}:
        return None
    owners: list[str] = []
    for name, transformer, selected in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        selected = list(selected)
        if name == "cat":
            encoder = getattr(transformer, "named_steps", {}).get("onehot")
            if encoder is None:
                return None
            placeholders = [f"c{i}" for i in range(len(selected))]
            owners += [selected[int(out.split("_", 1)[0][1:])] for out in encoder.get_feature_names_out(placeholders)]
        else:
            owners += selected
    return owners if set(owners) <= set(columns) else None


def _table(per_column: dict[str, float]) -> pd.DataFrame:
    table = pd.DataFrame({"feature": list(per_column), "importance": list(per_column.values())})
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
