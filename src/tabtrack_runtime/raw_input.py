"""The first step of every model tabtrack builds: rows as they arrive, the columns as they were in training.

Rows reach a logged model from pandas reading a CSV (integers as int64, or as float64 once one value is
missing), Parquet (pandas `category`, nullable integers and booleans), JSON bodies and `mlflow.pyfunc`
(which rebuilds each column from its values). This step gives the preprocessing the same features every
time: numeric columns as float64 (booleans as 0/1), text columns as Python strings with NaN for gaps, in
the training order. It lives inside the saved model, so `mlflow.pyfunc`, `mlflow models predict`,
`tabtrack predict` and `tabtrack serve` all see the same features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class RawInput(TransformerMixin, BaseEstimator):
    """Select `columns` by name (any order, extra columns ignored) and give each its training type:
    float64 for those in `numeric`, text for the rest. A missing column or a value that is not a number
    in a numeric column raises ValueError naming it."""

    def __init__(self, columns: Sequence[str] = (), numeric: Sequence[str] = ()):
        self.columns = columns
        self.numeric = numeric

    def fit(self, X, y=None):
        self.n_features_in_ = len(self.columns)
        return self

    def transform(self, X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=list(self.columns)) if np.ndim(X) == 2 else pd.DataFrame([X])
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks column(s) the model needs: {', '.join(map(repr, missing))}.")
        numeric = set(self.numeric)
        # Columns already of their training type pass through without a copy (the training frame's do).
        coerced = {c: as_number_column(X[c], c) if c in numeric else as_text_column(X[c]) for c in self.columns}
        return pd.DataFrame(coerced, index=X.index, copy=False)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.columns, dtype=object)


def as_number_column(values: pd.Series, name: str = "") -> pd.Series:
    """float64 with NaN for gaps, from ints, nullable ints, booleans, floats or text holding numbers."""
    if values.dtype == "float64":
        return values  # already its training type: no copy of a million values
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    as_objects = values.astype(object)
    numbers = pd.to_numeric(
        as_objects.map(lambda v: float(v) if isinstance(v, bool | np.bool_) else v), errors="coerce"
    ).astype("float64")
    bad = numbers.isna() & as_objects.notna() & ~as_objects.map(_is_blank)
    if bad.any():
        raise ValueError(f"column {name!r} must be numeric; got {as_objects[bad].iloc[0]!r}.")
    return numbers


def as_text_column(values: pd.Series) -> pd.Series:
    """A categorical column as the pipeline expects it at fit and at serve time: object dtype, text
    values, NaN for missing (consistent across pandas versions, their string dtypes and `category`)."""
    if (values.dtype == object or isinstance(values.dtype, pd.StringDtype)) and pd.api.types.infer_dtype(
        values, skipna=True
    ) in ("string", "empty"):
        text = values.astype(object)  # text already: no per-value pass (and no copy when it is object)
        return text.where(text.notna(), np.nan) if text.hasnans else text
    return values.astype(object).where(values.notna(), np.nan).map(_text).astype(object)


def _text(value):
    return value if isinstance(value, float) and np.isnan(value) else str(value)


def _is_blank(value) -> bool:
    return isinstance(value, str) and not value.strip()
