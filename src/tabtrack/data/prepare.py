"""Turn a loaded table into clean features and target, decide the task, and split.

Everything here checks at the boundary and returns normalised values; training code
after it can trust its inputs.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabtrack.data.load import release_arrow_memory
from tabtrack.errors import DataError
from tabtrack_runtime.raw_input import as_number_column, as_text_column

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
# A numeric target with at most this many distinct values is read as class labels.
MAX_CLASSES_FOR_NUMERIC_TARGET = 20


@dataclass
class Dataset:
    """Features and target after cleaning, plus what was learned about them."""

    X: pd.DataFrame
    y: pd.Series
    task: str
    target: str
    numeric_columns: list[str]
    categorical_columns: list[str]
    dropped_target_rows: int = 0

    @property
    def classes(self) -> list | None:
        return sorted(self.y.unique().tolist()) if self.task == "classification" else None


@dataclass
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    # with conformal intervals: training rows held out of the fit, to calibrate them
    X_calibration: pd.DataFrame | None = None
    y_calibration: pd.Series | None = None


def hold_out_calibration(split: Split, *, share: float, level: float, random_state: int, task: str) -> Split:
    """Take `share` of the training rows out of the fit, stratified for classifiers, to calibrate conformal
    intervals at `level` on rows the model never saw (the test split stays untouched)."""
    from sklearn.model_selection import train_test_split

    from tabtrack.evaluate.conformal import rows_needed

    n_calibration = int(np.ceil(share * len(split.y_train)))
    needed = rows_needed(level)
    if n_calibration < needed:
        raise DataError(
            f"intervals={level} needs at least {needed} calibration rows; calibration_size={share} of "
            f"{len(split.y_train)} training rows gives {n_calibration}: raise calibration_size or lower intervals."
        )
    stratify = split.y_train if task == "classification" and split.y_train.value_counts().min() >= 2 else None
    fit, calibration = train_test_split(
        np.arange(len(split.y_train)), test_size=n_calibration, random_state=random_state, stratify=stratify
    )
    return Split(
        split.X_train.iloc[fit], split.X_test, split.y_train.iloc[fit], split.y_test,
        split.X_train.iloc[calibration], split.y_train.iloc[calibration],
    )  # fmt: skip


def detect_task(y: pd.Series) -> str:
    """Classification for text, bool or few-valued targets; regression for the rest."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    distinct = y.nunique(dropna=True)
    if distinct <= MAX_CLASSES_FOR_NUMERIC_TARGET and np.all(np.mod(y.dropna(), 1) == 0):
        return "classification"
    return "regression"


def prepare_dataset(
    frame: pd.DataFrame, *, target: str, task: str = "auto", source: str = "data", convert: bool = True
) -> Dataset:
    """Validate the target, drop unlabeled rows, normalise feature dtypes and settle the task. `convert=False`
    keeps the features' own dtypes (a user's Pipeline is fed the rows as they are)."""
    if target not in frame.columns:
        raise DataError(_missing_target_message(target, list(frame.columns), source))
    y = frame[target]
    missing = int(y.isna().sum())
    if missing:
        if missing == len(frame):
            raise DataError(f"target column {target!r} in {source} has no values (all {missing} are empty).")
        log.warning("dropped %d row(s) with an empty target %r", missing, target)
        frame = frame.loc[y.notna()]
        y = frame[target]
    X = frame.drop(columns=[target])
    if X.shape[1] == 0:
        raise DataError(f"{source} has no feature columns besides the target {target!r}.")

    resolved_task = detect_task(y) if task == "auto" else task
    if resolved_task not in TASKS:
        raise DataError(f"unknown task {task!r}; use auto, classification or regression.")
    if resolved_task == "classification":
        y = _normalise_labels(y)
        if y.nunique() < 2:
            raise DataError(
                f"target {target!r} in {source} has a single class ({y.iloc[:1].tolist()[0]!r}); classification needs at least two."
            )
    else:
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(
                f"target {target!r} is not numeric, so it cannot be used for regression; use --task classification."
            )
        y = y.astype("float64")
        if not np.isfinite(y).all():
            raise DataError(f"target {target!r} in {source} holds infinite values; remove those rows.")

    X, numeric, categorical = _normalise_features(X, source, convert=convert)
    return Dataset(
        X=X.reset_index(drop=True),
        y=y.reset_index(drop=True),
        task=resolved_task,
        target=target,
        numeric_columns=numeric,
        categorical_columns=categorical,
        dropped_target_rows=missing,
    )


def split_dataset(data: Dataset, *, test_size: float, random_state: int, release_rows: bool = False) -> Split:
    """Hold out a test split, stratified on the labels for classification: the rows sklearn's
    `train_test_split(X, y, ...)` would pick. With `release_rows` the dataset gives its feature rows up as
    they are split (`data.X` keeps its columns, no rows), so the rows are never held twice: pass it only
    when nothing else holds the frame the features came from."""
    from sklearn.model_selection import train_test_split

    n_test = int(np.ceil(test_size * len(data.y)))
    if n_test < 1 or len(data.y) - n_test < 2:
        raise DataError(
            f"{len(data.y)} rows cannot be split with test_size={test_size}; use more rows or a different test_size."
        )
    stratify = None
    if data.task == "classification":
        counts = data.y.value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise DataError(
                f"class(es) {', '.join(map(repr, rare.index.tolist()))} of target {data.target!r} have a single row; "
                "stratified splitting needs at least 2 rows per class: drop or merge them."
            )
        if n_test < len(counts):
            raise DataError(
                f"test_size={test_size} gives {n_test} test rows for {len(counts)} classes; raise test_size."
            )
        stratify = data.y
    # The same positions train_test_split(data.X, data.y, ...) takes: it draws them from the row count
    # and the labels alone, then takes them from each array.
    train, test = train_test_split(
        np.arange(len(data.y)), test_size=test_size, random_state=random_state, stratify=stratify
    )
    y_train, y_test = data.y.take(train), data.y.take(test)
    if not release_rows or data.X.columns.has_duplicates:
        return Split(data.X.take(train), data.X.take(test), y_train, y_test)
    X = data.X
    data.X = X.iloc[:0].copy()
    X_train, X_test = _take_releasing(X, train, test)
    return Split(X_train, X_test, y_train, y_test)


def _take_releasing(X: pd.DataFrame, *positions: np.ndarray) -> list[pd.DataFrame]:
    """`[X.take(p) for p in positions]`, a column at a time, each column dropped from X once taken: the
    source's memory goes as the parts' comes (1M x 30 floats: the split's peak 2.0x the rows -> 1.1x).
    One block per column, as X.take gives from the normalised features, so models see the same arrays;
    each part's index is taken once and shared by its columns (a column's own take copies the index)."""
    indexes = [X.index.take(rows) for rows in positions]
    parts: list[list[pd.Series]] = [[] for _ in positions]
    for name in list(X.columns):
        column = X.pop(name)
        for part, rows, index in zip(parts, positions, indexes, strict=True):
            part.append(pd.Series(column.array.take(rows), index=index, name=name, dtype=column.dtype, copy=False))
        del column
        release_arrow_memory()  # Arrow allocated the loaded columns, and its allocator keeps what is freed
    return [pd.concat(part, axis=1) for part in parts]


def presplit_dataset(data: Dataset, n_train: int) -> Split:
    """The first `n_train` rows train, the rest test: for data split before tabtrack saw it (--test-data)."""
    if n_train < 2 or len(data.y) - n_train < 1:
        raise DataError(
            f"a pre-split dataset needs at least 2 training rows and 1 test row, got {n_train} and "
            f"{len(data.y) - n_train}."
        )
    X, y = data.X, data.y
    return Split(X.iloc[:n_train], X.iloc[n_train:], y.iloc[:n_train], y.iloc[n_train:])


def is_numeric_feature(values: pd.Series) -> bool:
    """A column the model takes as a number (booleans as 0/1); every other column is a category."""
    return pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values)


def feature_kinds(X: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns of X, as tabtrack's preprocessing would treat them."""
    numeric = [str(c) for c in X.columns if is_numeric_feature(X[c])]
    return numeric, [str(c) for c in X.columns if str(c) not in set(numeric)]


def _missing_target_message(target: str, columns: list[str], source: str) -> str:
    lowered = {str(c).strip().lower(): str(c) for c in columns}
    close = difflib.get_close_matches(target, [str(c) for c in columns], n=3, cutoff=0.6)
    exact_but_case = lowered.get(target.strip().lower())
    if exact_but_case and exact_but_case not in close:
        close.insert(0, exact_but_case)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(repr(str(c)) for c in columns[:20]) + (" ..." if len(columns) > 20 else "")
    return f"target column {target!r} is not in {source}.{hint} Columns: {shown}."


def _normalise_labels(y: pd.Series) -> pd.Series:
    """Integral float labels (1.0, 0.0) read from CSV become ints; text stays text."""
    if pd.api.types.is_bool_dtype(y):
        return y.astype("int64")
    if pd.api.types.is_float_dtype(y) and np.all(np.mod(y, 1) == 0):
        return y.astype("int64")
    if not pd.api.types.is_numeric_dtype(y):
        return y.astype(object).map(str)
    return y


def _normalise_features(
    X: pd.DataFrame, source: str, *, convert: bool = True
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Numeric columns become float64, everything else object-dtype text with NaN for missing (what tabtrack's
    preprocessing is fitted on); with `convert=False` the columns keep their dtypes and are only checked."""
    X = X.copy(deep=False)  # columns are replaced, never written into: no need to copy a 1M-row frame
    X.columns = [str(c) for c in X.columns]
    numeric: list[str] = []
    categorical: list[str] = []
    for column in X.columns:
        values = X[column]
        if is_numeric_feature(values):
            as_float = as_number_column(values, column)
            if np.isinf(as_float).any():
                raise DataError(
                    f"feature column {column!r} in {source} holds infinite values; replace them with empty cells or drop the rows."
                )
            if convert:
                X[column] = as_float
            numeric.append(column)
        elif pd.api.types.is_datetime64_any_dtype(values) and convert:
            raise DataError(
                f"feature column {column!r} in {source} holds dates, which a model cannot take as they are; "
                f"derive numeric features from it (year, month, days since a reference date) or drop it with "
                f"--set 'drop_columns=[{column}]'."
            )
        else:
            if convert:
                X[column] = as_text_column(values)
            categorical.append(column)
    empty = [c for c in X.columns if X[c].isna().all()]
    if empty:
        raise DataError(
            f"feature column(s) {', '.join(map(repr, empty))} in {source} have no values at all; drop them."
        )
    return X, numeric, categorical
